#!/usr/bin/env python3
"""Generate the bundled sample chat exports (sample_logs/) and their ground truth.

The sample world is three shops (rules/shops.yaml) with their knowledge bases
(rules/knowledge/<shop_id>/), three nights of chats, and every format the importers read:
Qianniu TXT and GB18030 CSV (tmall_yuejia), XLSX (jd_jike), JSONL (tw_meiyan, Traditional).

Why generated rather than hand-written: the later stages need hundreds of conversations with
known planted problems (wrong facts, 禁用语, slow replies, traps that must NOT fire...). Every
planted item is written to tests/data/sample_truth.csv so precision/recall can be measured.

Deterministic: one seeded ``random.Random``; no set iteration, no clock. XLSX zip entries and
document properties get fixed timestamps so ``python scripts/make_sample_logs.py`` rewrites
sample_logs/ byte-identically.

Dialogue = module-level utterance tables (many hand-written variants per situation, slot-filled
with the knowledge base's real names/prices/materials); logic = the small functions below.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SEED = 20261125
NIGHTS = (date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25))
CONVS_PER_NIGHT = 40
MAX_GAP_S = 560  # every in-conversation gap stays < 10 min so Qianniu sessionisation keeps it whole
FIXED_ZIP_TIME = (2026, 11, 26, 8, 0, 0)

# ------------------------------------------------------------------------------------------
# Agents: (account as exported, display name used in greetings, behaviour profile)
# Profiles are probabilities per conversation; they give each agent a recognisable style.
# 阿杰 works two shops: 悦家家居旗舰店:阿杰 (Tmall) and jike_ajie (JD) are the same person.
# ------------------------------------------------------------------------------------------
PROFILES: dict[str, dict[str, float]] = {
    "star": dict(greet=0.95, close=0.9, sell=0.85, needs=0.7, wrong=0.04, deflect=0.02, template=0.05,
                 partial=0.05, rude=0.0, slow_first=0.03, slow_reply=0.04, unanswered=0.02, empathy=0.95),
    "mechanical": dict(greet=0.35, close=0.25, sell=0.1, needs=0.05, wrong=0.12, deflect=0.15,
                       template=0.6, partial=0.45, rude=0.05, slow_first=0.2, slow_reply=0.2,
                       unanswered=0.15, empathy=0.3),
    "mixed": dict(greet=0.7, close=0.6, sell=0.45, needs=0.35, wrong=0.3, deflect=0.08, template=0.2,
                  partial=0.15, rude=0.08, slow_first=0.1, slow_reply=0.12, unanswered=0.06, empathy=0.6),
    "rough": dict(greet=0.5, close=0.35, sell=0.3, needs=0.15, wrong=0.22, deflect=0.2, template=0.2,
                  partial=0.2, rude=0.45, slow_first=0.12, slow_reply=0.15, unanswered=0.08, empathy=0.2),
}

AGENTS: dict[str, list[tuple[str, str, str]]] = {
    "tmall_yuejia": [("悦家家居旗舰店:小美", "小美", "star"), ("悦家家居旗舰店:阿杰", "阿杰", "mechanical"),
                     ("悦家家居旗舰店:暖暖", "暖暖", "mixed")],
    "jd_jike": [("jike_xiaoyu", "小雨", "star"), ("jike_dawei", "大伟", "rough"),
                ("jike_ajie", "阿杰", "mechanical")],
    "tw_meiyan": [("meiyan_amy", "Amy", "star"), ("meiyan_kevin", "Kevin", "mechanical"),
                  ("meiyan_xiaoqing", "小晴", "rough")],
}

# ------------------------------------------------------------------------------------------
# Buyer nick parts (invented)
# ------------------------------------------------------------------------------------------
NICK_PARTS = {
    "tmall_yuejia": (["tb_", "tb_", "t-", ""],
                     ["小鹿乱撞", "橘子汽水", "晴天娃娃", "爱吃鱼的猫", "木子李", "阿狸不睡", "星河滚烫",
                      "南风知意", "芒果布丁", "一只小胖", "奶茶三分糖", "云朵棉花糖", "夏天的风", "快乐小羊",
                      "阳光小米", "月亮不睡我不睡", "糯米团子", "柠檬不萌", "咸鱼翻身", "王大锤", "陈小皮",
                      "兔子先生", "榴莲控", "饭团君", "可乐加冰", "江南烟雨", "半糖主义", "吃土少女"],
                     ["", "", "88", "2019", "_cc", "666", "520", "_lin", "07"]),
    "jd_jike": (["jd_", "jd_", "jd_"],
                ["数码小白", "极客老王", "耳机控", "通勤打工人", "跑步的鱼", "码农阿强", "学生党小周",
                 "夜猫子", "出差达人", "电量焦虑", "降噪爱好者", "小刘同学", "老张爱折腾", "充电五分钟",
                 "地铁一号线", "游戏少年", "摄影师阿飞", "健身狂魔", "宅家小李", "科技宅"],
                ["", "123", "2024", "_bj", "_sh", "999", "_01", "8848", "_x"]),
    "tw_meiyan": ([""],
                  ["lily", "tsai.wen", "meimei", "annie_chen", "yuting", "peggy", "hsu.jia", "ivy",
                   "wendy_lin", "chloe", "rachel", "yiting", "claire", "kiki", "joanne", "shanshan",
                   "vivian", "grace.h", "bella", "candy"],
                  ["0915", "1022", "88", "_tw", "520", "1314", "99", "_02", "2023", "_xo"]),
}

# ------------------------------------------------------------------------------------------
# Utterance tables. zh-CN is shared by the two mainland shops; zh-TW is written in Taiwanese
# usage (免運, 出貨, 鑑賞期), not converted.
# Slots: {name} product name, {alias} one alias, {v} the fact value as said, {orig} list price,
# {agent} agent display name, {shop} shop name, {other} another product.
# ------------------------------------------------------------------------------------------
CN: dict[str, list[str]] = {
    "opener": ["在吗", "你好", "在吗？", "亲 在不在", "你好，想问一下", "客服在吗", "hello", "在不",
               "你好，请问一下{alias}", "在吗，这个{alias}还有吗", "问一下{alias}"],
    "greet": ["亲，您好，很高兴为您服务~", "您好，我是客服{agent}，很高兴为您服务，请问有什么可以帮您？",
              "亲，在的呢，很高兴为您服务，请问有什么可以帮您？", "您好亲，我是{agent}，请问有什么可以帮到您呢",
              "亲，您好~欢迎光临{shop}，很高兴为您服务"],
    "bare_hello": ["在的", "在", "嗯", "在的亲", "说"],
    "close": ["感谢您的支持，祝您生活愉快~", "有问题随时联系我哦，感谢您的支持！",
              "感谢亲的信任，祝您生活愉快，晚安~", "好的亲，感谢您的支持，收到货有任何问题随时找我哦",
              "不客气的亲，祝您生活愉快，期待您的再次光临~"],
    "empathy": ["非常抱歉给您带来不便，理解您的心情，我马上帮您查一下", "真的很抱歉让您久等了，我这边立刻帮您处理",
                "理解您的心情，换作是我也会着急的，非常抱歉给您带来不便", "非常抱歉亲，这是我们的疏忽，我马上帮您处理"],
    "q_price": ["{alias}现在多少钱？", "这个{alias}活动价是多少", "{name}现在买多少钱呀", "现在拍{alias}到手多少",
                "{alias}双十一过了还有优惠价吗？多少钱", "这个现在什么价格", "黑五有活动吗，{alias}现在啥价",
                "{alias}能便宜点不，现在多少"],
    "a_price": ["亲，{name}现在活动价{v}哦~", "现在拍下到手价{v}，活动到11月30号", "{alias}目前是{v}，原价{orig}元，现在买很划算",
                "现在是{v}哦亲", "这款活动期间{v}，比平时便宜不少呢"],
    "q_dispatch": ["什么时候发货", "今天拍明天能发吗", "{alias}多久能发货呀", "现在下单几天发货？", "急用，多久能发",
                   "周末前能收到吗，几天发货", "拍了多久发出呀"],
    "a_dispatch": ["亲，这款付款后{v}内发货哦", "现货的，{v}内给您发出", "正常{v}内发货，发货后会有物流信息",
                   "付款后{v}内发出哦亲"],
    "q_return": ["不合适能退吗", "支持七天无理由吗", "买回来不喜欢可以退吗，几天内", "退换货怎么弄，有几天时间",
                 "万一不合适退货麻烦吗", "拆了包装还能退吗"],
    "a_return": ["支持{v}的亲，不影响二次销售就可以", "亲，我们支持{v}，放心拍", "可以的，{v}，收到不满意可以申请",
                 "支持{v}哦，有运费险的"],
    "q_shipping": ["包邮吗", "运费多少啊", "满多少包邮", "包邮不，偏远地区呢", "就买一个{alias}包邮吗"],
    "a_shipping": ["亲，全店{v}哦", "{v}的，不满的话要付运费", "我们是{v}，还送运费险", "亲，{v}哈"],
    "q_warranty": ["保修多久", "质保多长时间啊", "坏了怎么办，保修几年？", "{alias}有质保吗，多久"],
    "a_warranty": ["{name}保修{v}哦，非人为损坏免费换新", "质保{v}，有问题随时找我们", "亲，{alias}是{v}质保的",
                   "享受{v}保修，您放心"],
    "q_stock": ["{alias}还有货吗", "{alias}现在有现货吗", "这个还有吗，想要{color}的"],
    "a_stock_yes": ["有现货的亲，拍下就安排", "有的，现货充足", "有的亲，{color}也有"],
    "a_stock_no": ["亲，{name}暂时缺货了，可以看看{other}，也很不错", "不好意思亲，这款目前没货了，到货时间还没定"],
    "deflect": ["不清楚，您自己看详情页吧", "这个我也不太清楚，详情页都有写", "您看一下商品详情页哈",
                "具体以详情页为准，我这边不清楚", "详情页上有的，您往下翻翻"],
    "short_template": ["有的亲", "是的亲", "可以的亲", "好的亲", "亲，可以的哦", "嗯嗯是的"],
    "ok": ["好的", "嗯嗯", "好", "OK", "哦哦", "好的谢谢", "明白了", "行", "好的👌", "嗯嗯😊"],
    "buy": ["好的那我拍了", "行，我下单了", "那我拍一个{spec}", "好，就要这个了", "拍了，尽快发哦"],
    "think": ["好的我再看看", "我再考虑一下", "我再对比一下", "先加购物车了", "嗯，晚点再说"],
    "bye": ["好的谢谢", "谢谢啦", "好的，辛苦了", "ok谢谢", "知道了，谢谢", "谢谢亲🙏"],
    "nudge": ["在吗", "？", "人呢", "？？", "还在吗", "有人吗"],
    "paid_ok": ["付好了", "已经付款了", "付了哈"],
    "cuifu": ["亲，看到您已经拍下还没付款哦，现在付款{v}内就能安排发货~",
              "亲，订单还在待付款状态哦，活动价名额有限，记得尽快支付呀",
              "亲亲，您的订单还没支付哦，付款后我这边马上帮您备注优先发货"],
    "coupon": ["现在可以领店铺券，{pname}，下单前记得领取哦", "亲，现在有{pname}的活动，凑一凑更划算",
               "给您推荐一下，现在{pname}，很划算的"],
    "urgency_today": ["{pname}今晚24点就结束了，喜欢的话建议今天拍下哦", "活动今晚24点结束，错过就要恢复原价了亲"],
    "urgency_soon": ["{pname}25号就结束了，早拍早发货哦", "活动名额不多了，喜欢的话尽早下单哦"],
    "recommend": ["推荐您看看{name}，{v}的，现在活动价{price}元，很多老客都回购", "这款{name}是我们家爆款，{v}，口碑很好",
                  "给您推荐{name}哈，{v}，性价比很高"],
    "upgrade": ["加{diff}元就能升级{up}，{reason}，更划算哦", "亲可以考虑一下{up}，只要多加{diff}元，{reason}"],
    "bundle": ["{reason}，搭配{addon}一起买更划算，两件活动价一共{total}元", "亲，{addon}和{name}一起拍更划算哦，{reason}"],
    "thanks_buy": ["好的亲，已经帮您备注了，会尽快发出", "收到亲，我们会尽快安排发货的"],
    "two_part_join": ["{q1}？还有{q2}", "{q1}，另外{q2}", "想问下{q1}，{q2}"],
}

TW: dict[str, list[str]] = {
    "opener": ["您好", "請問有人在嗎", "哈囉", "你好，想請問一下", "請問{alias}還有貨嗎", "想問{alias}",
               "您好～想詢問一下", "在嗎", "不好意思想問一下", "哈囉～請問{alias}"],
    "greet": ["您好～很高興為您服務，請問有什麼可以幫您的呢？", "您好，我是客服{agent}，很高興為您服務！",
              "哈囉您好，歡迎光臨{shop}，很高興為您服務～", "您好，我是{agent}，請問有什麼需要幫忙的嗎？"],
    "bare_hello": ["在", "您好", "嗯", "有"],
    "close": ["感謝您的支持，祝您有美好的一天！", "有任何問題都歡迎再詢問喔，謝謝您～", "感謝您的支持，祝您生活愉快！",
              "謝謝您的耐心，期待您再次光臨喔～"],
    "empathy": ["非常抱歉造成您的不便，能理解您的心情，我馬上幫您查詢", "真的很抱歉讓您久等了，我這邊立刻幫您處理",
                "非常抱歉，能理解您的心情，我們一定會負責處理到好"],
    "q_price": ["{alias}現在多少錢？", "請問{name}活動價多少", "{alias}現在買是什麼價格", "這個現在有特價嗎？多少",
                "黑五{alias}有折扣嗎？現在多少", "{alias}一瓶多少錢"],
    "a_price": ["{name}現在活動價{v}喔～", "目前特價{v}，活動到11/30", "{alias}現在是{v}，原價NT${orig}，很划算喔",
                "現在是{v}唷"],
    "q_dispatch": ["什麼時候出貨？", "今天下單多久會出貨", "{alias}有現貨嗎？多久寄出", "急用，多快可以出貨"],
    "a_dispatch": ["付款後{v}內出貨喔", "現貨商品，{v}內就會寄出", "正常{v}內出貨，出貨後會有物流通知"],
    "q_return": ["不適合可以退嗎？", "有鑑賞期嗎？幾天", "買了不喜歡可以退貨嗎"],
    "a_return": ["有的，享有{v}喔，商品未拆封都可以退", "我們提供{v}，請您放心", "可以的，{v}內未拆封都能申請退貨"],
    "q_shipping": ["有免運嗎？", "滿多少免運費", "運費怎麼算"],
    "a_shipping": ["全館{v}喔", "{v}，未滿的話運費NT${fee}", "目前是{v}唷"],
    "q_stock": ["{alias}還有貨嗎", "{alias}現在有現貨嗎", "請問{alias}有庫存嗎"],
    "a_stock_yes": ["有現貨喔，下單就幫您安排", "有的，庫存充足"],
    "a_stock_no": ["不好意思，{name}目前缺貨，可以參考{other}喔", "抱歉，這款暫時沒貨了"],
    "q_material": ["{alias}主要成分是什麼？", "這個成分是什麼，敏感肌可以用嗎", "{alias}裡面有什麼成分"],
    "a_material": ["{name}主要成分是{v}喔", "這款是{v}，溫和不刺激", "主要是{v}，很多敏感肌的客人在用"],
    "deflect": ["不清楚耶，您自己看商品頁面", "商品頁都有寫喔，您看一下", "這個我也不太清楚，請參考商品說明",
                "以商品頁為準喔"],
    "short_template": ["有喔", "是的", "可以喔", "好的", "對"],
    "ok": ["好的", "嗯嗯", "了解", "OK", "好喔", "謝謝"],
    "buy": ["好，那我下單了", "那我買一組", "好的我直接下單", "下單了，麻煩盡快寄喔"],
    "think": ["我再考慮一下", "我再比較看看", "先加入購物車", "好，我再想想"],
    "bye": ["好的謝謝", "謝謝您", "了解，謝謝～", "OK謝謝"],
    "nudge": ["在嗎？", "？", "請問有人嗎", "？？", "哈囉？"],
    "paid_ok": ["已經付款了", "付好了喔", "付款完成"],
    "cuifu": ["您好，看到您的訂單還沒付款喔，付款後{v}內就會出貨～", "提醒您訂單尚未付款，活動價數量有限，記得盡快完成付款喔"],
    "coupon": ["現在有{pname}，結帳前記得領券喔", "目前{pname}，湊一湊更划算喔"],
    "urgency_today": ["{pname}今晚12點就結束囉，喜歡的話建議今天下單", "活動今晚24點結束，之後就恢復原價了"],
    "urgency_soon": ["{pname}到25號就結束了，早買早享受喔", "活動數量有限，喜歡的話建議早點下單"],
    "recommend": ["推薦您{name}，{v}，現在活動價NT${price}，回購率很高喔", "這款{name}是我們的熱銷款，{v}，評價很好",
                  "可以參考{name}，{v}，很適合您"],
    "upgrade": ["加NT${diff}就能升級{up}，{reason}，更划算喔", "可以考慮{up}，只差NT${diff}，{reason}"],
    "bundle": ["{reason}，{name}搭配{addon}一起買更划算，兩件活動價共NT${total}", "{addon}和{name}一起入手更划算喔，{reason}"],
    "thanks_buy": ["好的，已幫您備註，會盡快出貨", "收到，我們會盡快幫您安排出貨"],
    "two_part_join": ["{q1}？還有{q2}", "{q1}，另外{q2}", "想問{q1}，{q2}"],
}

# Shop-specific tables ------------------------------------------------------------------------
SHOP_TEXT: dict[str, dict[str, list[str]]] = {
    "tmall_yuejia": {
        "q_material": ["{alias}是什么材质的？", "这个是纯棉的吗", "{alias}面料是啥", "会起球吗？什么面料的",
                       "{alias}是全棉的吗，宝宝皮肤敏感"],
        "a_material": ["亲，{name}是{v}的哦", "面料用的是{v}，亲肤透气", "这款是{v}，不起球的", "材质是{v}，您放心"],
        "needs": ["请问您是自用还是送人呢？床是1.5米还是1.8米？", "亲平时睡觉怕热还是怕冷呀？我帮您推荐合适的",
                  "家里床的尺寸是多少呢？我帮您选被套尺寸", "亲是给自己买还是给宝宝用呢？"],
        "needs_answer": ["自己用，1.8米的床", "送人的，1.5米", "怕冷，冬天用", "给孩子用的，1.2米的床", "自用，床是1.8的"],
        "spec": ["1.8m床的", "1.5m床的", "月白色的", "浅灰的"],
        "wrong_material": ["60支天丝", "纯棉", "100%桑蚕丝", "100%新疆长绒棉", "羊毛"],
        "postsale_logistics": ["我买的{name}怎么还没到啊", "物流两天没更新了，怎么回事", "快递显示签收了但我没收到",
                               "都三天了还没发货吗"],
        "postsale_quality": ["收到的{name}有个线头", "四件套有股味道，洗了还有", "被子收到有点压扁了，正常吗",
                             "颜色和图片差好多"],
        "postsale_return": ["我想退货，尺寸买错了", "买了1.5的，想换1.8米的", "不太喜欢这个颜色，能退吗"],
        "solution_logistics": ["我帮您查了一下，包裹在杭州中转站，预计明天送达，我已经帮您催促快递了",
                               "已经帮您联系快递加急派送了，今天之内会有更新，给您补偿5元无门槛红包"],
        "solution_quality": ["您拍个照片发我一下，我给您申请换新，来回运费我们承担",
                             "已经帮您登记了，给您补偿5元无门槛红包，真的很抱歉"],
        "solution_return": ["已经为您提交退换申请，运费险会理赔运费，您放心寄回", "好的，已经帮您换成1.8米的，今天就给您重新发出"],
    },
    "jd_jike": {
        "q_material": ["{alias}外壳是什么材质", "这个是塑料的还是金属的？", "{alias}用料怎么样，什么材质",
                       "外壳耐摔吗，啥材质"],
        "a_material": ["{name}用的是{v}，质感很好", "外壳是{v}的哦", "这款采用{v}，散热和手感都不错"],
        "needs": ["请问您主要是通勤用还是运动的时候用呢？", "您的手机是苹果还是安卓呀？我帮您看看哪款快充更合适",
                  "平时坐地铁多吗？经常通勤的话推荐降噪款", "是给笔记本充还是手机充呢？"],
        "needs_answer": ["通勤用，地铁上", "跑步的时候用", "苹果手机", "安卓，小米的", "笔记本和手机都要充"],
        "spec": ["黑色的", "白色的", "一个", "两个"],
        "wrong_material": ["全金属", "铝合金", "碳纤维", "PC塑料", "硅胶"],
        "postsale_logistics": ["我的{name}到哪了", "物流一直不动啊", "说好的24小时发货呢，还没发", "快递什么时候到"],
        "postsale_quality": ["{name}左耳没声音", "充电宝充不进电", "充电器用了两天就发烫得厉害", "耳机连不上蓝牙了"],
        "postsale_return": ["我想退货，买错型号了", "能换个颜色吗", "这个用不上，想退"],
        "solution_logistics": ["我帮您查了一下，包裹已经到北京分拣中心，预计明天送达", "已经帮您催促仓库优先出库，今晚一定发出"],
        "solution_quality": ["您先试一下重置：放回充电盒长按按键10秒，还不行直接给您换新",
                             "已经给您登记了质量问题换新，快递上门取件，不用您出运费"],
        "solution_return": ["已经为您提交退货申请，审核通过后原路退款", "可以的，已经帮您登记换货，新的明天发出"],
    },
    "tw_meiyan": {
        "needs": ["請問您是什麼膚質呢？乾肌、油肌還是混合肌？", "平常保養步驟有哪些呢？我幫您搭配", "最近比較在意的是保濕還是暗沉呢？"],
        "needs_answer": ["混合肌，T字容易出油", "乾肌，冬天會脫皮", "敏感肌", "主要想保濕", "想改善暗沉"],
        "spec": ["一瓶", "兩瓶", "一組"],
        "wrong_material": ["膠原蛋白", "水楊酸", "玻尿酸", "A醇", "果酸", "維他命C"],
        "postsale_logistics": ["我的{name}到哪裡了", "物流好幾天沒更新", "超商取貨一直沒通知", "說24小時出貨，還沒寄"],
        "postsale_quality": ["{name}擦了有點刺痛", "收到的瓶子漏液了", "精華液顏色跟之前買的不一樣", "壓頭壓不出來"],
        "postsale_return": ["我想退貨，買錯了", "可以換成別的品項嗎", "還沒拆封，想退"],
        "solution_logistics": ["幫您查詢了，包裹已到物流中心，預計明天送達門市", "已經幫您催促物流，會補寄一份試用包給您"],
        "solution_quality": ["麻煩您拍照給我，我們幫您免費換新一瓶", "已經幫您登記，會補寄一份試用包給您，真的很抱歉"],
        "solution_return": ["已經幫您申請退貨，物流會到府收件", "可以的，已幫您登記換貨，新品明天寄出"],
    },
}

RUDE: dict[str, list[tuple[str, str]]] = {  # (customer trigger, agent 禁用语 reply)
    "zh-CN": [
        ("你们怎么还没发货啊，都三天了", "这是快递的问题不归我们管，你自己找快递"),
        ("能便宜点吗", "价格就这样，爱买不买"),
        ("我没看懂，能再说一遍吗", "我都说了，你听不懂吗？"),
        ("这个怎么用啊", "不知道，你自己看说明书"),
        ("那怎么办啊", "没办法，跟我说没用"),
        ("到底多大的，你说清楚", "我也不清楚，你自己看详情页"),
        ("怎么这么慢回复", "别催了，催也没用"),
        ("能不能给我换一个", "你自己用坏的，跟我说没用"),
        ("这个跟图片不一样啊", "说了多少遍了还问，图片仅供参考"),
        ("那你帮我查一下", "自己不会看物流吗？"),
    ],
    "zh-TW": [
        ("怎麼還沒出貨，已經三天了", "這是物流的問題，不歸我們管"),
        ("可以算便宜一點嗎", "價格就這樣，愛買不買"),
        ("我看不太懂，可以再說一次嗎", "我已經說過了，你聽不懂嗎？"),
        ("這個要怎麼用", "不知道，你自己看說明"),
        ("那怎麼辦", "沒辦法，跟我說沒用"),
        ("容量到底多少", "我也不清楚，你自己看商品頁"),
        ("回覆好慢喔", "不要一直催，催也沒用"),
        ("可以幫我查一下嗎", "自己不會查物流喔？"),
    ],
}

TRAPS: dict[str, dict[str, list]] = {
    "zh-CN": {
        "buyer_negation_trap": ["我也不知道选哪个好，你帮我推荐一下吧", "我也不清楚尺码，你帮我看看",
                                "不知道这个和别的有啥区别", "没办法，家里床太大了，有2米的吗", "我不清楚是不是正品，有授权吗"],
        "agent_quote_trap": [("买回来不知道怎么用怎么办", "您说的“不知道怎么用”是指哪一步呢？我一步一步教您"),
                             ("我也不清楚要多大的", "您说“不清楚要多大的”没关系，告诉我您的使用场景我帮您选"),
                             ("我怕收到不喜欢没办法退", "您担心的“没办法退”不会的，我们都支持7天无理由退换")],
        "agent_negation_trap": ["请问还有什么不清楚的地方吗？", "您放心，不会不知道的，发货后系统会自动通知您",
                                "没有不清楚的地方的话，我就帮您备注啦"],
        "positive_context_trap": ["没办法，这款实在太受欢迎了，补货几次都卖光了😊", "真是没办法不推荐给您，这款性价比太高了",
                                  "哈哈没办法，好东西大家都喜欢"],
    },
    "zh-TW": {
        "buyer_negation_trap": ["我也不知道選哪個比較好，可以推薦嗎？", "我不清楚自己是什麼膚質耶", "不知道這兩瓶有什麼差別"],
        "agent_quote_trap": [("買了不知道怎麼用", "您說的「不知道怎麼用」是指使用順序嗎？洗臉後先擦化妝水再擦精華就可以喔"),
                             ("我不清楚能不能跟A醇一起用", "您說的「不清楚能不能一起用」，建議A醇晚上用、維C早上用就可以")],
        "agent_negation_trap": ["請問還有什麼不清楚的地方嗎？", "您放心，不會不知道的，出貨後會有簡訊通知"],
        "positive_context_trap": ["沒辦法，這款真的太熱賣了，補貨好幾次都賣光😊", "真的沒辦法不推薦，這款CP值超高"],
    },
}

TEMPLATE_PASTE = {  # the one reply one agent pastes into many conversations
    "tmall_yuejia": "亲，本店商品均为天猫正品，支持7天无理由退换，满99包邮，有任何问题随时联系客服哦~",
    "jd_jike": "您好，极客数码官方旗舰店正品保障，支持7天无理由退换，满99包邮，更多参数请参考商品详情页。",
    "tw_meiyan": "您好～美研保養旗艦館全館正品，享7天鑑賞期，滿NT$490免運，有任何問題歡迎詢問喔！",
}

BOT_GREETINGS = {
    "tmall_yuejia": ["【自动回复】亲，欢迎光临悦家家居~客服马上为您服务",
                     "【自动回复】您好，黑五满300减30进行中，客服稍后回复您哦"],
    "jd_jike": ["您好，欢迎光临极客数码京东旗舰店，我是智能客服小极，人工客服马上为您服务",
                "您好，黑五数码节满300减40进行中，请问有什么可以帮您？人工客服即将接入"],
    "tw_meiyan": ["您好～歡迎光臨美研保養旗艦館，客服人員將盡快回覆您！", "感謝您的訊息，黑色星期五滿NT$1000折NT$100進行中～"],
}

UPGRADES = {  # (from sku, to sku, reason)
    "tmall_yuejia": [("YJ-001", "YJ-014", "60支更细腻柔滑，手感好很多"), ("YJ-007", "YJ-006", "乳胶枕回弹好不塌陷")],
    "jd_jike": [("JK-C02", "JK-C01", "65W氮化镓笔记本也能充"), ("JK-P03", "JK-P01", "容量大四倍还能带上飞机")],
    "tw_meiyan": [("MY-05", "MY-02", "修護效果更好，乾肌很推"), ("MY-04", "MY-12", "一次試用四個品項")],
}
BUNDLES = {  # (main sku, add-on sku, reason)
    "tmall_yuejia": [("YJ-001", "YJ-007", "满300还能减30"), ("YJ-004", "YJ-001", "冬被配四件套刚好凑满减"),
                     ("YJ-014", "YJ-007", "满300还能减30")],
    "jd_jike": [("JK-C01", "JK-L01", "快充要配好线才能跑满功率"), ("JK-P01", "JK-L01", "出门带一根编织线更耐用"),
                ("JK-E01", "JK-C02", "凑一凑满300减40")],
    "tw_meiyan": [("MY-01", "MY-08", "精華搭配面膜保濕加倍"), ("MY-04", "MY-10", "洗完馬上擦化妝水效果更好")],
}

EVENT_TEXT = {
    "taobao_csv": {"order": "买家已下单：{name} ×{qty}", "payment": "买家已付款", "refund": "退款成功"},
    "jd_xlsx": {"order": "[下单] {name} ×{qty}", "payment": "[付款] 订单已支付"},
    "shopee_jsonl": {"order": "訂單已成立：{name} x{qty}", "payment": "買家已完成付款"},
}

MULTILINE_TAILS = ["有其他问题随时问我哦~", "收藏店铺还能领无门槛券哦[玫瑰]", "[微笑]", "具体可以看下面的图片👇"]

CN_DIGITS = "零一二三四五六七八九"


def cn_number(n: int) -> str:
    """299 -> 两百九十九: agents often type prices in words; the KB check must still match."""
    if not 0 < n < 10000:
        return str(n)
    parts, units = [], [(1000, "千"), (100, "百"), (10, "十")]
    rest, zero = n, False
    for unit, name in units:
        d = rest // unit
        rest %= unit
        if d:
            if zero:
                parts.append("零")
                zero = False
            digit = "两" if d == 2 and unit >= 100 else CN_DIGITS[d]
            parts.append(("" if (d == 1 and unit == 10 and not parts) else digit) + name)
        elif parts:
            zero = True
    if rest:
        if zero:
            parts.append("零")
        parts.append(CN_DIGITS[rest])
    return "".join(parts)


# ------------------------------------------------------------------------------------------
# Knowledge base (read from rules/, so the logs always quote the shipped KB)
# ------------------------------------------------------------------------------------------
CN_HEADERS = {"商品编码": "sku", "商品名称": "name", "别名": "aliases", "价格": "price", "活动价": "promo_price",
              "活动开始": "promo_start", "活动结束": "promo_end", "材质": "material", "规格": "specs",
              "尺码": "sizes", "颜色": "colors", "库存": "stock", "发货时效(小时)": "dispatch_hours",
              "保修(月)": "warranty_months", "赠品": "gifts"}


@dataclass
class Product:
    sku: str
    name: str
    aliases: list[str]
    price: int
    promo: int
    material: str
    colors: list[str]
    stock: int
    dispatch: int
    warranty: int | None


@dataclass
class ShopWorld:
    shop_id: str
    name: str
    locale: str
    products: dict[str, Product]
    policies: dict
    text: dict[str, list]


def load_world(rules: Path) -> dict[str, ShopWorld]:
    shops = yaml.safe_load((rules / "shops.yaml").read_text(encoding="utf-8"))["shops"]
    world: dict[str, ShopWorld] = {}
    for s in shops:
        kdir = rules / "knowledge" / s["shop_id"]
        with (kdir / "catalog.csv").open(encoding="utf-8-sig", newline="") as fh:
            rows = [{CN_HEADERS.get(k, k): v for k, v in r.items()} for r in csv.DictReader(fh)]
        products = {
            r["sku"]: Product(r["sku"], r["name"], r["aliases"].split("|"), int(r["price"]), int(r["promo_price"]),
                              r["material"], [c for c in r["colors"].split("|") if c], int(r["stock"]),
                              int(r["dispatch_hours"]), int(r["warranty_months"]) if r["warranty_months"] else None)
            for r in rows
        }
        base = dict(CN if s.get("locale", "zh-CN") == "zh-CN" else TW)
        base.update(SHOP_TEXT[s["shop_id"]])
        world[s["shop_id"]] = ShopWorld(s["shop_id"], s["name"], s.get("locale", "zh-CN"), products,
                                        yaml.safe_load((kdir / "policies.yaml").read_text(encoding="utf-8")), base)
    return world


# ------------------------------------------------------------------------------------------
# Conversation model
# ------------------------------------------------------------------------------------------
@dataclass
class Msg:
    role: str  # customer | agent | bot | system
    text: str
    ts: datetime | None = None
    event: str | None = None
    amount: float | None = None
    gap: str = "normal"  # timing hint: normal | burst | slow | first_slow | quick | event | cuifu
    truth: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail)
    bad: str | None = None  # empty_text | bad_time | unknown_role
    line: int = 0  # physical line/row in the written file


@dataclass
class Conv:
    shop_id: str
    export_id: str
    agent: str
    agent_name: str
    buyer: str
    sku: str
    start: datetime
    msgs: list[Msg] = field(default_factory=list)
    conv_truth: list[tuple[str, Msg, str]] = field(default_factory=list)  # (kind, message, detail)


class Talk:
    """Builds one conversation's turns; knows the shop world, agent profile and the rng."""

    def __init__(self, rng: random.Random, world: ShopWorld, agent: tuple[str, str, str], night: date,
                 product: Product) -> None:
        self.rng, self.w, self.night, self.p = rng, world, night, product
        self.account, self.agent_name, prof = agent
        self.prof = PROFILES[prof]
        self.msgs: list[Msg] = []
        self.tw = world.locale == "zh-TW"
        self.color = rng.choice(product.colors) if product.colors else "白色"  # one colour per chat
        # Qianniu nights: some agent messages span two lines (the TXT importer must glue them)
        self.multiline = world.shop_id == "tmall_yuejia" and night < NIGHTS[2]

    # helpers -------------------------------------------------------------------------------
    def chance(self, key: str, scale: float = 1.0) -> bool:
        return self.rng.random() < self.prof[key] * scale

    def pick(self, key: str) -> str:
        return self.rng.choice(self.w.text[key])

    def fill(self, tpl: str, **kw: object) -> str:
        p = self.p
        base = dict(name=p.name, alias=self.rng.choice(p.aliases), orig=p.price, agent=self.agent_name,
                    shop=self.w.name, color=self.color,
                    fee=self.w.policies.get("shipping_fee"), spec=self.pick("spec"),
                    other=self.other_product().name)
        base.update(kw)
        return tpl.format(**base)

    def other_product(self) -> Product:
        cands = [q for q in self.w.products.values() if q.sku != self.p.sku and q.stock > 0]
        return cands[hash_index(self.p.sku, len(cands))]

    def say(self, role: str, text: str, gap: str = "normal", *truth: tuple[str, str]) -> Msg:
        m = Msg(role, text, gap=gap, truth=list(truth))
        self.msgs.append(m)
        return m

    def customer(self, text: str, gap: str = "normal") -> Msg:
        return self.say("customer", text, gap)

    def agent(self, text: str, gap: str = "normal", *truth: tuple[str, str]) -> Msg:
        if gap == "normal" and self.chance("slow_reply", 0.5):
            gap = "slow"
        if self.multiline and self.rng.random() < 0.12:
            text = text + "\n" + self.rng.choice(MULTILINE_TAILS)
        return self.say("agent", text, gap, *truth)

    def money(self, n: int) -> str:
        if self.tw:
            return self.rng.choice([f"NT${n}", f"{n}元", f"NT${n}"])
        forms = [f"{n}元", f"{n}", f"¥{n}", f"{n}元"]
        if n < 1000:
            forms.append(cn_number(n) + ("元" if self.rng.random() < 0.5 else ""))
        return self.rng.choice(forms)

    # facts ---------------------------------------------------------------------------------
    def fact_value(self, topic: str, wrong: bool) -> tuple[str, str]:
        """(value as the agent says it, KB value for the truth detail)."""
        p, pol, r = self.p, self.w.policies, self.rng
        if topic == "price":
            kb = f"promo_price={p.promo} price={p.price}"
            if wrong:
                return self.money(p.promo - r.choice([20, 30, 40, 50, 60]) if p.promo > 100 else p.promo - 10), kb
            return self.money(p.promo), kb
        if topic == "material":
            kb = f"material={p.material}"
            if wrong:
                opts = [m for m in self.w.text["wrong_material"] if m not in p.material and p.material not in m]
                return r.choice(opts), kb
            return p.material, kb
        if topic == "dispatch":
            kb = f"dispatch_hours={p.dispatch}"
            h = p.dispatch
            if wrong:
                h = r.choice([x for x in (24, 48, 12) if x < p.dispatch])
            words = {24: ["24小时", "一天"], 48: ["48小时", "两天"], 72: ["72小时", "三天"], 12: ["12小时"]}
            if self.tw:
                words = {24: ["24小時", "一天"], 48: ["48小時", "兩天"], 72: ["72小時", "三天"], 12: ["12小時"]}
            return r.choice(words[h]), kb
        if topic == "return":
            days = pol["return_days"]
            kb = f"return_days={days} ({pol['return_kind']})"
            if wrong:
                days = r.choice([15, 30]) if not self.tw else r.choice([14, 10])
            unit = "天鑑賞期" if self.tw else "天无理由退换"
            num = str(days) if r.random() < 0.6 else cn_number(days)
            return num + unit, kb
        if topic == "shipping":
            thr = pol["free_shipping_threshold"]
            kb = f"free_shipping_threshold={thr}"
            if wrong:
                thr = r.choice([299, 990]) if self.tw else r.choice([59, 199, 69])
            if self.tw:
                return r.choice([f"滿NT${thr}免運", f"滿{thr}免運"]), kb
            return r.choice([f"满{thr}包邮", f"满{thr}元包邮", f"满{cn_number(thr)}包邮"]), kb
        if topic == "warranty":
            kb = f"warranty_months={p.warranty}"
            months = p.warranty or 12
            if wrong:
                months = r.choice([m for m in (6, 12, 24, 36) if m != months])
            words = {6: ["6个月", "半年"], 12: ["12个月", "一年", "1年"], 24: ["24个月", "两年", "2年"],
                     36: ["36个月", "三年"]}
            return r.choice(words[months]), kb
        raise ValueError(topic)

    def topics(self) -> list[str]:
        t = ["price", "material", "dispatch", "return", "shipping", "stock"]
        if self.p.warranty and not self.tw:
            t.append("warranty")
        return t

    def ask(self, topic: str) -> str:
        return self.fill(self.pick("q_" + topic))

    def answer(self, topic: str, mode: str) -> tuple[str, list[tuple[str, str]]]:
        """Agent answer to a topic question in a mode: correct | wrong | deflect | template | short."""
        if mode == "deflect":
            return self.pick("deflect"), [("deflection", f"question about {topic}; KB answers it")]
        if mode == "template":
            return TEMPLATE_PASTE[self.w.shop_id], [("template_reply", f"pasted template in reply to {topic}")]
        if mode == "short":
            return self.pick("short_template"), [("mechanical_short", f"short template reply to {topic}")]
        if topic == "stock":
            if self.p.stock > 0 and mode == "correct":
                return self.fill(self.pick("a_stock_yes")), [("correct_stock", f"stock={self.p.stock}")]
            if self.p.stock == 0 and mode == "correct":
                return self.fill(self.pick("a_stock_no")), [("correct_stock", "stock=0")]
            if self.p.stock == 0:
                return self.fill(self.pick("a_stock_yes")), [("wrong_stock", "KB stock=0; agent says in stock")]
            return self.fill(self.pick("a_stock_yes")), [("correct_stock", f"stock={self.p.stock}")]
        wrong = mode == "wrong"
        v, kb = self.fact_value(topic, wrong)
        text = self.fill(self.pick("a_" + topic), v=v)
        kind = ("wrong_" if wrong else "correct_") + topic
        return text, [(kind, f"KB {kb}; said {v}")]

    # moves ---------------------------------------------------------------------------------
    def opening(self) -> None:
        r = self.rng
        first = self.fill(self.pick("opener"))
        self.customer(first)
        if r.random() < 0.25:
            self.customer(self.ask(r.choice(self.topics())), "burst")
        if r.random() < (0.5 if self.tw else 0.75):
            bot = r.choice(BOT_GREETINGS[self.w.shop_id])
            self.say("bot", bot, "quick", ("auto_reply", "platform/bot greeting"))
        gap = "first_slow" if self.chance("slow_first") else "first"
        if self.chance("greet"):
            g = self.fill(self.pick("greet"))
            self.say("agent", g, gap, ("greeting", "good practice: greeting"))
        else:
            self.say("agent", self.pick("bare_hello"), gap)

    def selling(self) -> None:
        r, w = self.rng, self.w
        moves = ["recommend", "upgrade", "bundle", "coupon", "urgency"]
        r.shuffle(moves)
        for mv in moves[: r.randint(1, 3)]:
            if mv == "recommend":
                o = self.other_product()
                self.agent(self.fill(self.pick("recommend"), name=o.name, v=o.material, price=o.promo), "normal",
                           ("proactive_selling", f"recommendation of {o.sku}"))
            elif mv == "upgrade":
                ups = [u for u in UPGRADES[w.shop_id] if u[0] == self.p.sku] or UPGRADES[w.shop_id]
                src, dst, reason = r.choice(ups)
                a, b = w.products[src], w.products[dst]
                self.agent(self.fill(self.pick("upgrade"), diff=b.promo - a.promo, up=b.name, reason=reason),
                           "normal", ("proactive_selling", f"upgrade {a.name}->{b.name} (+{b.promo - a.promo})"))
            elif mv == "bundle":
                mine = [b for b in BUNDLES[w.shop_id] if b[0] == self.p.sku]
                main, add, reason = r.choice(mine or BUNDLES[w.shop_id])
                a, b = w.products[main], w.products[add]
                self.agent(self.fill(self.pick("bundle"), name=a.name, addon=b.name, reason=reason,
                                     total=a.promo + b.promo), "normal", ("proactive_selling", f"bundle {a.sku}+{b.sku}"))
            elif mv == "coupon":
                promos = self.active_promos()
                if promos:
                    pr = r.choice(promos)
                    self.agent(self.fill(self.pick("coupon"), pname=pr["name"]), "normal",
                               ("proactive_selling", f"coupon/promotion: {pr['name']}"))
            elif mv == "urgency":
                ending = [p for p in self.active_promos() if p["end"] == date(2026, 11, 25)]
                if ending and self.night == date(2026, 11, 25):
                    txt = self.fill(self.pick("urgency_today"), pname=ending[0]["name"])
                elif ending:
                    txt = self.fill(self.pick("urgency_soon"), pname=ending[0]["name"])
                else:
                    continue
                self.agent(txt, "normal", ("proactive_selling", "urgency"))

    def active_promos(self) -> list[dict]:
        return [p for p in self.w.policies.get("promotions", []) if p["start"] <= self.night <= p["end"]]

    def trap(self) -> None:
        r = self.rng
        t = TRAPS[self.w.locale]
        kind = r.choice(["buyer_negation_trap", "agent_quote_trap", "agent_negation_trap", "positive_context_trap"])
        if kind == "buyer_negation_trap":
            m = self.customer(r.choice(t[kind]))
            m.truth.append((kind, "customer's own negation; must not count against the agent"))
            self.agent(self.fill(self.pick("needs")), "normal", ("proactive_selling", "asks about needs"))
            self.customer(self.pick("needs_answer"))
        elif kind == "agent_quote_trap":
            c, a = r.choice(t[kind])
            self.customer(c)
            self.agent(a, "normal", (kind, "agent quotes the customer's words"))
        else:
            self.agent(r.choice(t[kind]), "normal", (kind, "negative word in a non-negative context"))

    def rude(self) -> None:
        c, a = self.rng.choice(RUDE[self.w.locale])
        self.customer(c)
        self.agent(a, "normal", ("rude", "禁用语/blaming or impatient phrasing"))

    def exchange(self, topic: str, mode: str) -> None:
        self.customer(self.ask(topic))
        if self.rng.random() < 0.12:
            self.customer(self.pick("nudge"), "burst")
        text, truth = self.answer(topic, mode)
        self.agent(text, "normal", *truth)
        if self.rng.random() < 0.5:
            self.customer(self.pick("ok"))

    def two_part(self, t1: str, t2: str) -> None:
        q1 = self.ask(t1).rstrip("？?")
        q2 = self.ask(t2)
        self.customer(self.fill(self.pick("two_part_join"), q1=q1, q2=q2))
        text, truth = self.answer(t1, "correct")
        self.agent(text, "normal", *truth, ("partial_answer", f"answered {t1}, ignored {t2}"))

    def buy(self) -> None:
        r, p = self.rng, self.p
        qty = 1 if r.random() < 0.8 else 2
        self.customer(self.fill(self.pick("buy")))
        self.say("system", "", "event").event = "order"
        self.msgs[-1].amount = float(p.promo * qty)
        self.msgs[-1].text = f"{p.name}|{qty}"  # rendered per format later
        if r.random() < 0.65:
            self.say("system", "", "event").event = "payment"
            self.msgs[-1].amount = float(p.promo * qty)
            if r.random() < 0.5:
                self.agent(self.pick("thanks_buy"))
        else:
            self.say("agent", self.pick("thanks_buy"), "normal")
            dispatch, _ = self.fact_value("dispatch", False)
            self.agent(self.fill(self.pick("cuifu"), v=dispatch), "cuifu", ("cuifu", "reminds unpaid order"))
            if r.random() < 0.6:
                self.customer(self.pick("paid_ok"))
                self.say("system", "", "event").event = "payment"
                self.msgs[-1].amount = float(p.promo * qty)


def hash_index(key: str, n: int) -> int:
    """Stable index (str hash is salted per process, so never use hash())."""
    return sum(key.encode("utf-8")) % n


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------
def presale(t: Talk) -> None:
    r = t.rng
    t.opening()
    if t.chance("needs"):
        t.agent(t.fill(t.pick("needs")), "normal", ("proactive_selling", "asks about needs"))
        t.customer(t.pick("needs_answer"))
    topics = t.topics()
    r.shuffle(topics)
    n = r.randint(2, 4)
    wrong_done = False
    for i, topic in enumerate(topics[:n]):
        if i == 1 and t.chance("partial") and len(topics) > n:
            t.two_part(topic, topics[n])
            continue
        # warranty is only asked about for a few products: plant errors there more often so it is measurable
        if not wrong_done and t.chance("wrong", 2.5 if topic == "warranty" else 1.0) and (
                topic != "stock" or t.p.stock == 0):
            mode, wrong_done = "wrong", True
        elif t.chance("deflect", 0.5):
            mode = "deflect"
        elif t.chance("template", 0.5):
            mode = r.choice(["template", "template", "short"])
        else:
            mode = "correct"
        t.exchange(topic, mode)
    if r.random() < 0.3:
        t.trap()
    if t.chance("rude", 0.7):
        t.rude()
    if t.chance("sell"):
        t.selling()
    outcome = r.random()
    if outcome < 0.35:
        t.buy()
    elif outcome < 0.7:
        t.customer(t.pick("think"))
    if t.chance("unanswered"):
        q = t.ask(r.choice(t.topics()))
        t.customer(q).truth.append(("unanswered", "customer question left without reply at the end"))
        return
    if t.chance("close"):
        t.customer(t.pick("bye"))
        t.agent(t.pick("close"), "normal", ("closing", "good practice: closing"))
    elif r.random() < 0.5:
        t.customer(t.pick("bye"))


def postsale(t: Talk) -> None:
    r = t.rng
    kind = r.choice(["postsale_logistics", "postsale_quality", "postsale_return"])
    t.customer(t.fill(t.pick(kind)))
    if r.random() < 0.4:
        t.customer(t.pick("nudge"), "burst")
    gap = "first_slow" if t.chance("slow_first") else "first"
    if t.chance("greet", 0.6):
        t.say("agent", t.fill(t.pick("greet")), gap, ("greeting", "good practice: greeting"))
        gap = "normal"
    t.msgs[0].truth.append(("postsale", f"{kind}; no selling expected"))
    if t.chance("rude", 0.8):
        t.rude()
        if r.random() < 0.5:
            t.customer(r.choice(["你这什么态度", "服务太差了", "我要投诉", "什麼態度啊" if t.tw else "什么态度啊"]))
            if t.chance("empathy"):
                t.agent(t.pick("empathy"), "normal", ("empathy_apology", "apology after complaint"))
    elif t.chance("deflect", 0.8):
        text, truth = t.answer("dispatch", "deflect")
        t.say("agent", text, gap, *truth)
    else:
        if t.chance("empathy"):
            t.say("agent", t.pick("empathy"), gap, ("empathy_apology", "good practice: empathy + apology"))
        else:
            t.say("agent", t.pick("short_template"), gap)
        t.customer(t.pick("ok") if r.random() < 0.5 else t.pick("nudge"))
        t.agent(t.pick("solution_" + kind.split("_")[1]))
        if kind == "postsale_return" and t.w.shop_id == "tmall_yuejia" and t.night == NIGHTS[2]:
            t.say("system", "", "event").event = "refund"
            t.msgs[-1].amount = float(t.p.promo)
        if kind == "postsale_return" and r.random() < 0.6:
            text, truth = t.answer("return", "wrong" if t.chance("wrong", 0.5) else "correct")
            t.agent(text, "normal", *truth)
        if r.random() < 0.3:
            t.trap()
    if t.chance("unanswered"):
        t.customer(r.choice(["那大概什么时候能处理好？", "那运费谁出？"] if not t.tw else ["那大概什麼時候處理好？"]
                            )).truth.append(("unanswered", "customer question left without reply at the end"))
        return
    t.customer(t.pick("bye"))
    if t.chance("close"):
        t.agent(t.pick("close"), "normal", ("closing", "good practice: closing"))


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------
def agent_delay(rng: random.Random, gap: str) -> int:
    if gap == "first_slow":
        return rng.randint(190, 420)
    if gap == "slow":
        return rng.randint(125, MAX_GAP_S)
    if gap == "first":
        return rng.randint(6, 50)
    if gap == "cuifu":
        return rng.randint(150, 400)
    return min(60, max(5, int(rng.lognormvariate(2.9, 0.55))))


def assign_times(rng: random.Random, conv: Conv) -> None:
    """Walk the turns, adding realistic delays; record slow-reply ground truth as we go."""
    t = conv.start
    prev_role = None
    waiting_since: datetime | None = None  # customer message not yet answered by a human
    for i, m in enumerate(conv.msgs):
        if i == 0:
            delay = 0
        elif m.role == "customer":
            delay = rng.randint(2, 8) if m.gap == "burst" else rng.randint(8, 50) + len(m.text) // 2
        elif m.role == "bot":
            delay = rng.randint(1, 3)
        elif m.role == "system":
            delay = rng.randint(15, 90)
        elif prev_role == "system":
            delay = rng.randint(5, 40)  # keeps Qianniu (which drops event rows) under the session gap
        elif prev_role == "agent" and m.gap in ("normal", "slow"):
            delay = rng.randint(3, 15)
        else:
            delay = agent_delay(rng, m.gap)
        t = t + timedelta(seconds=min(delay, MAX_GAP_S))
        m.ts = t
        if m.role == "customer" and waiting_since is None:
            waiting_since = t
        if m.role == "agent":
            if waiting_since is not None:
                wait = int((t - waiting_since).total_seconds())
                if m.gap == "first_slow":
                    conv.conv_truth.append(("slow_first_reply", m, f"first human reply after {wait} s"))
                elif m.gap == "slow" and wait >= 120:
                    conv.conv_truth.append(("slow_reply", m, f"reply after {wait} s"))
            waiting_since = None
        prev_role = m.role


# ------------------------------------------------------------------------------------------
# Building the world's conversations
# ------------------------------------------------------------------------------------------
def nick_factory(rng: random.Random, shop_id: str):
    pre, core, suf = NICK_PARTS[shop_id]
    used: set[str] = set()

    def make() -> str:
        while True:
            n = rng.choice(pre) + rng.choice(core) + rng.choice(suf)
            if n not in used:
                used.add(n)
                return n

    return make


def start_times(rng: random.Random, night: date, n: int) -> list[datetime]:
    hours = list(range(9, 24))
    weights = [2, 3, 3, 2, 3, 3, 3, 3, 3, 4, 6, 7, 7, 6, 4]
    out = []
    for _ in range(n):
        h = rng.choices(hours, weights)[0]
        m = rng.randint(0, 59 if h < 23 else 15)
        out.append(datetime(night.year, night.month, night.day, h, m, rng.randint(0, 59)))
    return sorted(out)


def export_id(shop_id: str, night: date, i: int) -> str:
    d = night.strftime("%Y%m%d")
    if shop_id == "tmall_yuejia":
        return f"{d}{i:04d}"
    if shop_id == "jd_jike":
        return f"JD{d}-{i:05d}"
    return f"SPE{night.strftime('%y%m%d')}{i:04d}"


def build_night(rng: random.Random, w: ShopWorld, night: date) -> list[Conv]:
    make_nick = nick_factory(rng, w.shop_id)
    convs: list[Conv] = []
    skus = list(w.products)
    for i, start in enumerate(start_times(rng, night, CONVS_PER_NIGHT)):
        agent = rng.choice(AGENTS[w.shop_id])
        sku = rng.choice(skus)
        t = Talk(rng, w, agent, night, w.products[sku])
        is_post = rng.random() < 0.22
        (postsale if is_post else presale)(t)
        conv = Conv(w.shop_id, export_id(w.shop_id, night, i + 1), agent[0], agent[1], make_nick(), sku, start,
                    t.msgs)
        if not is_post:
            mark_no_selling(conv)
        assign_times(rng, conv)
        convs.append(conv)
    add_returning_buyers(rng, convs)
    return convs


def mark_no_selling(conv: Conv) -> None:
    """A pre-sale chat where the agent never sells or asks about needs: mechanical Q&A."""
    kinds = [k for m in conv.msgs for k, _ in m.truth]
    if "proactive_selling" in kinds or "cuifu" in kinds:
        return
    first = next((m for m in conv.msgs if m.role == "agent"), None)
    if first is not None:
        conv.conv_truth.append(("no_selling", first, "pre-sale chat: no recommendation, upgrade, bundle, "
                                                      "coupon, urgency or needs question"))


def add_returning_buyers(rng: random.Random, convs: list[Conv]) -> None:
    """A few buyers come back later the same night: Qianniu must split them into two conversations."""
    for _ in range(3):
        a, b = rng.sample(range(len(convs)), 2)
        first, second = sorted((convs[a], convs[b]), key=lambda c: c.start)
        gap = (second.msgs[0].ts - first.msgs[-1].ts).total_seconds()
        if gap > 900 and second.buyer != first.buyer:
            second.buyer = first.buyer
            second.conv_truth.append(("returning_buyer", second.msgs[0],
                                      f"same buyer as {first.export_id}, {int(gap)} s later: new conversation"))


BAD_KINDS = ("empty_text", "bad_time", "unknown_role", "empty_text", "bad_time")


def plant_bad_rows(rng: random.Random, convs: list[Conv]) -> None:
    """A few broken rows per file; they must land in rejects.csv, not in the data."""
    for kind in BAD_KINDS:
        conv = rng.choice(convs)
        pos = rng.randint(1, len(conv.msgs) - 1)
        prev = conv.msgs[pos - 1]
        texts = {"empty_text": "", "bad_time": prev.text if prev.role == "customer" else "好的",
                 "unknown_role": "系统提示：会话已转接"}
        role = "customer" if kind != "unknown_role" else "agent"
        bad = Msg(role, texts[kind], ts=prev.ts + timedelta(seconds=1), bad=kind)
        conv.msgs.insert(pos, bad)


# ------------------------------------------------------------------------------------------
# Writers: each returns the list of files written; each message gets .line set.
# ------------------------------------------------------------------------------------------
def fmt_ts(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


BAD_TIME = ["2026-11-{d} 25:61:03", "2026-11-{d} 2O:15:33", "2026-11-{d} 20:15"]


def bad_time_text(rng: random.Random, ts: datetime) -> str:
    return rng.choice(BAD_TIME).format(d=f"{ts.day:02d}")


def write_qianniu(rng: random.Random, w: ShopWorld, convs: list[Conv], night: date, path: Path) -> None:
    """千牛 TXT: grouped by buyer; agents are '店铺名:客服名'; no event rows in this export."""
    export_at = datetime(night.year, night.month, night.day, 8) + timedelta(days=1)
    lines = [f"# 千牛聊天记录导出 店铺:{w.name} 导出时间:{fmt_ts(export_at)}"]
    by_buyer: dict[str, list[Conv]] = {}
    for c in sorted(convs, key=lambda c: c.start):
        by_buyer.setdefault(c.buyer, []).append(c)
    for buyer, cs in by_buyer.items():
        lines.append(f"===== 买家:{buyer} =====")
        for c in cs:
            for m in c.msgs:
                if m.role == "system":
                    continue
                sender = buyer if m.role == "customer" else c.agent
                if m.bad == "unknown_role":
                    sender = "路人_" + rng.choice(["9527", "0001", "七七"])
                stamp = bad_time_text(rng, m.ts) if m.bad == "bad_time" else fmt_ts(m.ts)
                m.line = len(lines) + 1
                body = m.text.split("\n")
                lines.append(f"{stamp} {sender}: {body[0]}")
                lines.extend(body[1:])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


CSV_ROLE = {"customer": "买家", "agent": "客服", "bot": "机器人", "system": "系统"}


def write_taobao_csv(rng: random.Random, w: ShopWorld, convs: list[Conv], path: Path) -> None:
    buf = io.StringIO(newline="")
    wr = csv.writer(buf, lineterminator="\r\n")
    wr.writerow(["店铺", "会话编号", "客服账号", "买家昵称", "发送时间", "发送方", "消息内容", "商品ID", "消息类型", "金额"])
    line = 1
    for c in sorted(convs, key=lambda c: c.start):
        for m in c.msgs:
            line += 1
            m.line = line
            kind = {"order": "下单", "payment": "付款", "refund": "退款"}.get(m.event or "", "文本")
            if m.role == "bot":
                kind = "自动回复"
            text = render_event("taobao_csv", w, m) if m.event else m.text
            role = "访客" if m.bad == "unknown_role" else CSV_ROLE[m.role]
            stamp = bad_time_text(rng, m.ts) if m.bad == "bad_time" else fmt_ts(m.ts)
            amount = f"{m.amount:.2f}" if m.amount is not None else ""
            wr.writerow([w.name, c.export_id, c.agent, c.buyer, stamp, role, text, c.sku, kind, amount])
    path.write_bytes(buf.getvalue().encode("gb18030"))


def render_event(profile: str, w: ShopWorld, m: Msg) -> str:
    if m.event == "order":
        name, qty = m.text.split("|")
        return EVENT_TEXT[profile]["order"].format(name=name, qty=qty)
    return EVENT_TEXT[profile][m.event or "payment"]


XLSX_ROLE = {"customer": "顾客", "agent": "客服", "bot": "机器人", "system": "系统"}


def write_jd_xlsx(rng: random.Random, w: ShopWorld, convs: list[Conv], path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "聊天记录"
    ws.append(["店铺名称", "会话ID", "客服ERP", "顾客账号", "时间", "角色", "内容", "SKU", "订单金额"])
    row = 1
    for c in sorted(convs, key=lambda c: c.start):
        for m in c.msgs:
            row += 1
            m.line = row
            text = render_event("jd_xlsx", w, m) if m.event else m.text
            role = "未知" if m.bad == "unknown_role" else XLSX_ROLE[m.role]
            stamp: object = bad_time_text(rng, m.ts) if m.bad == "bad_time" else m.ts
            ws.append([w.name, c.export_id, c.agent, c.buyer, stamp, role, text, c.sku, m.amount])
            if isinstance(stamp, datetime):
                ws.cell(row=row, column=5).number_format = "yyyy-mm-dd hh:mm:ss"
    for col, width in zip("ABCDEFGHI", (22, 20, 14, 18, 20, 8, 60, 10, 10), strict=True):
        ws.column_dimensions[col].width = width
    fixed = datetime(*FIXED_ZIP_TIME)
    wb.properties.created = fixed
    wb.properties.creator = "qa-inspect sample generator"
    raw = io.BytesIO()
    wb.save(raw)
    path.write_bytes(normalise_zip(raw.getvalue()))


def normalise_zip(data: bytes) -> bytes:
    """Rewrite an XLSX with fixed entry times and a fixed modified date: byte-identical reruns."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                              rb"\g<1>2026-11-26T08:00:00Z\g<2>", body)
            zi = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, body)
    return out.getvalue()


JSONL_ROLE = {"customer": "buyer", "agent": "agent", "bot": "bot", "system": "system"}


def write_shopee_jsonl(rng: random.Random, w: ShopWorld, convs: list[Conv], path: Path) -> None:
    lines = []
    for c in sorted(convs, key=lambda c: c.start):
        for m in c.msgs:
            text = render_event("shopee_jsonl", w, m) if m.event else m.text
            sent = m.ts.strftime("%Y-%m-%dT%H:%M:%S+08:00")
            if m.bad == "bad_time":
                sent = rng.choice(["2026-11-{d}T25:03:11+08:00", "昨天 21:03"]).format(d=f"{m.ts.day:02d}")
            rec = {"shop": w.shop_id, "conversation_id": c.export_id, "agent": c.agent, "buyer": c.buyer,
                   "sent_at": sent, "sender_type": "seller_assistant" if m.bad == "unknown_role" else JSONL_ROLE[m.role],
                   "message": text, "item_id": c.sku, "event": m.event, "amount": m.amount}
            lines.append(json.dumps(rec, ensure_ascii=False))
            m.line = len(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------
TRUTH_COLUMNS = ["conversation_id", "file", "kind", "message_text", "detail", "agent_id", "sent_at", "line"]
BAD_TRUTH = {"empty_text": ("bad_row_empty_text", "message text"), "bad_time": ("bad_row_bad_time", "time"),
             "unknown_role": ("bad_row_unknown_role", "sender role")}


def truth_rows(convs: list[Conv], rel: str, qianniu: bool) -> list[list[str]]:
    rows = []
    for c in convs:
        if qianniu:
            first = next(m for m in c.msgs if m.bad is None and m.role != "system")
            cid = f"{c.shop_id}:{c.buyer}:{first.ts.strftime('%Y%m%dT%H%M%S')}"
        else:
            cid = f"{c.shop_id}:{c.export_id}"
        for m in c.msgs:
            if qianniu and m.role == "system":
                continue
            if m.bad:
                kind, fld = BAD_TRUTH[m.bad]
                rows.append([cid, rel, kind, m.text, f"bad {fld} at line {m.line}", c.agent, fmt_ts(m.ts), str(m.line)])
            for kind, detail in m.truth:
                rows.append([cid, rel, kind, m.text, detail, c.agent, fmt_ts(m.ts), str(m.line)])
        for kind, m, detail in c.conv_truth:
            rows.append([cid, rel, kind, m.text, detail, c.agent, fmt_ts(m.ts), str(m.line)])
    return rows


# ------------------------------------------------------------------------------------------
def generate(out: Path, truth_path: Path, rules: Path) -> list[Path]:
    """Write every sample file and the truth CSV; return the paths written (README excluded)."""
    rng = random.Random(SEED)
    world = load_world(rules)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    truth: list[list[str]] = []
    for shop_id in ("tmall_yuejia", "jd_jike", "tw_meiyan"):
        w = world[shop_id]
        for n, night in enumerate(NIGHTS):
            convs = build_night(rng, w, night)
            plant_bad_rows(rng, convs)
            d = night.isoformat()
            if shop_id == "tmall_yuejia" and n < 2:
                rel, qn = f"tmall_yuejia_qianniu_{d}.txt", True
                write_qianniu(rng, w, convs, night, out / rel)
            elif shop_id == "tmall_yuejia":
                rel, qn = f"tmall_yuejia_{d}.csv", False
                write_taobao_csv(rng, w, convs, out / rel)
            elif shop_id == "jd_jike":
                rel, qn = f"jd_jike_{d}.xlsx", False
                write_jd_xlsx(rng, w, convs, out / rel)
            else:
                rel, qn = f"tw_meiyan_{d}.jsonl", False
                write_shopee_jsonl(rng, w, convs, out / rel)
            written.append(out / rel)
            truth.extend(truth_rows(convs, rel, qn))
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(TRUTH_COLUMNS)
    wr.writerows(truth)
    truth_path.write_text(buf.getvalue(), encoding="utf-8")
    written.append(truth_path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "sample_logs", help="folder for the sample exports")
    ap.add_argument("--truth", type=Path, default=REPO / "tests" / "data" / "sample_truth.csv",
                    help="ground-truth CSV of planted items")
    ap.add_argument("--rules", type=Path, default=REPO / "rules", help="rules folder with shops.yaml + knowledge/")
    args = ap.parse_args(argv)
    for p in generate(args.out, args.truth, args.rules):
        print(p)


if __name__ == "__main__":
    main()
