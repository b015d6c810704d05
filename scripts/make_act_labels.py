"""Write src/qa_inspect/data/acts_labelled.csv: the shipped training set of the agent act model.

Hand-written agent-message templates (Simplified and Taiwanese Traditional) with seeded slot
fills. Hard negatives are deliberate: double negatives (不会不知道的), the agent quoting the
buyer's angry words, polite refusals with an alternative (没办法…不过可以…), selling words in a
non-selling context (优惠券已退回). ``group`` names the template a row was filled from, so
cross-validation can hold out whole templates (paraphrase generalisation, not slot memory). Labels are multi-label ("a|b"); "other" = none of the rest.

Labelling conventions (see docs/scoring.md):
- deflection = the agent dodges or pushes the problem back without giving an answer or a next
  step; a refusal that explains why and offers an alternative is informative, not deflection.
- negative_tone = blaming, impatient, sarcastic or commanding phrasing towards the buyer.
- proactive_selling = the agent pushes a purchase (recommend, upsell, bundle, coupon, urgency, 催付).

    python scripts/make_act_labels.py   # deterministic (seed 20261127)
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import opencc

SEED = 20261127
OUT = Path(__file__).resolve().parents[1] / "src" / "qa_inspect" / "data" / "acts_labelled.csv"

SLOTS = {
    "p": ["连衣裙", "羽绒服", "电饭煲", "蓝牙耳机", "面霜", "沙发", "乳胶床垫", "扫地机器人", "手机壳", "跑鞋",
          "保温杯", "空气炸锅", "卫衣", "牛仔裤", "精华液", "猫粮", "儿童座椅", "投影仪", "行李箱", "四件套"],
    "h": ["亲", "亲亲", "亲爱的", "您", "宝宝", "小主", "亲~", "亲爱哒"],
    "x": ["哦", "呢", "哈", "呀", "~", "哟", "的", "", "", "哦~"],
    "e": ["", "", "", "[微笑]", "😊", "[玫瑰]", "~", "[愉快]"],
    "n": ["2", "3", "5", "7", "15", "24", "48"],
    "c": ["5", "10", "20", "30", "50"],
    "sz": ["S码", "M码", "L码", "XL码", "38码", "40码", "均码"],
    "mat": ["纯棉", "304不锈钢", "聚酯纤维", "真皮", "天然乳胶", "羊毛", "硅胶"],
    "q": ["顺丰", "中通", "圆通", "京东物流", "韵达"],
}

# (labels, templates). Slots in braces. Each template is expanded several times.
T: list[tuple[str, list[str]]] = [
    ("greeting_closing", [
        "{h}您好，欢迎光临本店{e}", "您好，我是客服小{name}，很高兴为您服务{e}", "在的{h}，有什么可以帮您{x}",
        "感谢您的耐心等待，祝您生活愉快{e}", "不客气{h}，有问题随时联系我们{x}", "欢迎下次光临{e}",
        "好的{h}，那就不打扰您啦，祝您购物愉快{e}", "您好{h}，这边是售后客服，很高兴为您服务",
        "晚上好{h}，欢迎光临{e}", "亲，还有其他可以帮您的吗？没有的话祝您生活愉快{e}",
        "请问还有别的需要帮忙的吗{e}", "还有其他想了解的吗{h}", "其他还有什么疑问吗？随时找我{x}",
        "感谢您对本店的支持，期待您的再次光临", "早上好呀{h}，请问在吗", "谢谢亲的支持，记得给个五星好评哦{e}",
        "嗯嗯好的，亲有问题随时戳我{e}", "客气啦{h}，应该的{e}",
    ]),
    ("needs_probing", [
        "{h}平时主要是自己用还是送人呢", "请问您的身高体重是多少，我帮您推荐尺码{x}", "{h}家里房间大概多少平米呢",
        "您的肤质是干性还是油性{x}", "请问宝宝现在多大了{x}", "{h}预算大概在多少呢，我帮您挑一下",
        "您主要是在什么场景下使用呢，运动还是通勤{x}", "请问家里有几口人用{x}", "{h}平时穿{sz}还是大一码{x}",
        "您更喜欢偏软还是偏硬的床垫呢", "请问是送给长辈还是年轻人{x}", "{h}对颜色有偏好吗",
        "您家猫咪几岁了，有没有挑食的情况{x}", "请问您平时脚背高不高{x}", "{h}想要保暖一点的还是轻薄一点的呢",
        "方便说下您家的户型吗，我看看哪个型号合适", "您之前用过我们家的{p}吗",
    ]),
    ("proactive_selling", [
        "{h}现在下单还可以领{c}元优惠券{x}", "这款{p}今天活动价，库存不多了，喜欢的话尽快拍下{x}",
        "{h}搭配我们家的{p2}一起买更划算，满减后只要加{c}元{e}", "店铺满299减{c}，您再凑一件就能用了{x}",
        "这款是我们的爆款，回购率很高，推荐您试试{e}", "{h}拍下后我这边马上给您安排发货{x}，今天下单明天就能到",
        "亲，订单还没付款哦，活动今晚12点就结束了{e}", "看到您的订单还没付款，是有什么顾虑吗？现在付款还送小礼品{x}",
        "升级款只贵{c}元，续航多一倍，更推荐您入手升级款{x}", "买两件第二件半价，很多顾客都是一起买的{x}",
        "{h}可以加入会员，首单立减{c}元{e}", "收藏加购还能优先发货{x}", "这个颜色卖得特别好，就剩最后几件了",
        "您可以考虑一下我们的套装，比单买省{c}块{x}", "{h}直播间今天还有额外赠品，抓紧时间{x}",
        "我们家新出的{p}也很适合您，要不要看看", "您拍{p}的话，我建议顺手带一个{p2}，用起来更方便",
        "{h}这款性价比很高，这个价格真的很划算了，错过就要等双十一了",
    ]),
    ("needs_probing|proactive_selling", [
        "{h}您是自己穿吗？如果是的话推荐您这款{p}，今天下单还送{p2}{x}",
        "请问您预算多少？这两款都在做活动，我给您推荐最合适的{x}",
        "您家房间多大呀？20平以上建议入手大功率款，现在有{c}元券{e}",
    ]),
    ("empathy", [
        "非常抱歉给您带来不便了{h}", "理解您的心情，换做是我也会着急的", "真的很抱歉让您久等了{e}",
        "给您添麻烦了，实在不好意思{x}", "{h}别着急，我一定帮您处理好{x}", "辛苦您了，真的非常抱歉",
        "听到这个消息我们也很难过，给您带来不好的体验了", "您的心情我非常理解{x}，是我们的疏忽",
        "对不起{h}，是我们的问题", "抱歉抱歉，这边确实是我们没做好{x}",
        "耽误您时间了，抱歉{x}", "麻烦您跑一趟了，真不好意思{x}", "这种情况确实挺闹心的，换谁都会生气{x}",
        "您先消消气，我们肯定给您一个说法{x}", "我特别理解，大冷天等快递确实很难受{x}", "委屈您了{h}",
        "辛苦您等了这么久{x}", "心疼亲，让您白跑一趟了{e}", "给您造成困扰了，我们深表歉意",
        "能感受到您现在很着急，您放心，我会一直跟进{x}", "这次体验不好，我们真的有责任{x}",
    ]),
    ("empathy|informative", [
        "非常抱歉{h}，仓库这两天爆单，您的{p}预计{n}天内发出{x}",
        "很抱歉让您久等了，查到您的包裹在{q}中转站，明天就能派送{x}",
        "理解您的着急，这边已经帮您加急处理了，{n}小时内会有专员联系您",
        "不好意思{h}，这个颜色暂时缺货，预计{n}天后补货{x}",
        "实在抱歉{h}，这个价格没办法再改了，页面价已经是最低价了{x}",
        "抱歉{h}，改地址这边没办法操作了，包裹已经发出，您可以联系{q}快递员转寄{x}",
        "抱歉让您失望了，这边给您申请了补偿，{n}个工作日内退回您的账户{x}",
    ]),
    ("empathy|proactive_selling", [
        "实在抱歉{h}，这个价格没办法再改了，不过可以给您申请一张{c}元优惠券{x}",
        "不好意思让您久等了，作为补偿给您一张{c}元无门槛券，下次购物可以用{e}",
    ]),
    ("informative", [
        "{h}这款{p}是{mat}材质的{x}", "我们默认发{q}快递，一般{n}天左右能到{x}", "{h}下午4点前拍下当天发货{x}",
        "这款支持7天无理由退换货{x}", "您的订单已经发货了，单号可以在订单详情里查看{x}",
        "{h}尺码偏大，建议拍小一码{x}", "保修期是一年，有问题可以直接联系售后{x}",
        "退款已经处理了，原路退回，{n}个工作日内到账{x}", "{h}这款{p}净重大约{n}公斤",
        "优惠券已经退回到您的账户了，可以在我的-优惠券里查看{x}", "赠品是随单一起发的，不单独发货{x}",
        "这个活动已经结束了，现在按页面价格购买{x}", "满减是自动计算的，在下单页面就能看到{x}",
        "{h}您说的那款是朋友推荐的吧，那是旧款，现在已经下架了{x}", "您之前领的券是店铺券，跟平台券可以叠加使用{x}",
        "发票会在确认收货后开具，电子发票发到您的邮箱{x}", "{h}放心，快递员不会不知道的，我们已经在面单上备注了",
        "不会不知道的{h}，仓库那边都有记录，放心{x}", "这个不是不能退，只要不影响二次销售都可以退{x}",
        "{h}您说的\"你们就是骗子\"这个情况我们已经记录了，会尽快核实{x}",
        "没有办法加急的单子也会按顺序尽快发出，一般{n}天内{x}", "颜色以实物为准，可能因为屏幕显示有轻微色差{x}",
        "{h}没办法改价的话，可以先拍下，我这边改好价格您再付款{x}", "这款{p}是不包邮的，满99才包邮{x}",
        "退货地址已经发您了，寄回时备注订单号就可以{x}", "洗的时候建议手洗，不要暴晒{x}",
        "这款{p}适合{n}岁以上使用{x}", "已经帮您备注了，发{q}{x}", "库存显示还有货，可以放心拍{x}",
        "客户您好，您反映的问题已经提交给售后专员，{n}小时内回复您{x}", "{h}，会员积分下单时会自动抵扣{x}",
        "您问的\"是不是假货\"，我们是品牌官方旗舰店，都是正品，支持专柜验货{x}",
        "推荐码是填在下单页面备注栏的{x}", "爆款那个链接已经下架了，现在这个是同款新链接{x}",
        "保价申请提交后一般当天出结果，失败的话页面会写明原因{x}", "如果审核没通过，系统会短信通知您的{x}",
        "仓库那边已经收到您的备注了{x}", "已经帮您申请了，{n}小时内有专员联系您{x}", "差价会原路退回，{n}个工作日内到账{x}",
        "补货到了以后按付款先后顺序发货{x}", "您在我的订单-售后申请里可以提交退货{x}",
    ]),
    ("negative_tone", [
        "你是不是没看详情页啊", "说了多少遍了，{n}天内发货", "自己不会看吗？页面上写得清清楚楚",
        "你到底买不买", "我已经说过了，不要再问了", "这都不懂吗", "爱买不买", "你自己看不懂怎么能怪我们",
        "早干嘛去了", "你这样我也没办法，随便你吧", "跟你说不清楚", "上面都写着呢，你自己看",
        "你是第一次网购吗", "能不能别一直问了", "都跟你说了是{sz}，你还问", "那是你自己的问题",
        "嫌贵就别买", "你要投诉就去投诉吧", "我们又不是故意的，你凶什么", "听不懂人话吗",
        "麻烦您先看一下商品详情再来问好吗", "这个问题刚才不是已经回答过了吗", "我没时间跟你一直解释",
        "你自己不看说明书怪谁", "我说的很清楚了吧", "你这人怎么这么较真", "随你怎么想", "那你想怎么样嘛",
        "有完没完", "别人都没问题，就你事多", "看不懂字吗", "这点小事也要投诉？", "你能不能认真看一下我发的",
        "不是跟你说过了吗？！", "你自己选错了尺码还来找我们", "这种问题还要问客服？", "拍之前不看清楚的吗",
        "我很忙，你快点说", "你烦不烦啊", "你想怎样就怎样吧", "就这样，没别的办法", "催什么催，又不是只有你一个人",
        "快递慢关我们什么事", "你爱信不信", "我都回答三遍了", "你是不是故意找茬", "这个你百度一下就知道了",
    ]),
    ("negative_tone|deflection", [
        "这个我也不知道，你自己去问快递吧", "不归我们管，你找平台去", "我也没办法，你自己想办法吧",
        "问我也没用，你去找售后", "跟我说没用，自己联系快递", "这个不是我们的问题，你找厂家",
    ]),
    ("deflection", [
        "{h}这个我不太清楚{x}", "以页面为准{x}", "这个我们这边查不到{x}", "您可以咨询一下快递{x}",
        "这个要问一下仓库，我也不确定{x}", "这个不好说{x}", "具体以实物为准{x}", "没办法的{h}",
        "这边无法处理{x}，您可以联系平台客服", "这个问题请您稍后再咨询{x}", "{h}具体的我也不是很清楚",
        "这个没有办法保证的{x}", "系统问题，我们也没办法{x}", "请您耐心等待{x}", "您可以去官网看看{x}",
        "{h}这个要看快递的速度了，我们也控制不了{x}", "这个我帮您反馈一下，但是不一定有结果{x}",
        "亲，这个要问厂家{x}", "暂时没有消息{x}，您再等等",
    ]),
    ("other", [
        "好的{x}", "嗯嗯", "收到{x}", "稍等{x}", "我看一下{x}", "在的", "嗯", "好滴{h}", "OK{e}", "我查一下{x}",
        "您稍等，正在为您查询{x}", "[图片]", "[商品链接]", "好的呢，我这边记录一下", "是的{h}", "对的{x}",
        "明白了{x}", "请问是这个订单吗？", "麻烦提供一下订单号{x}", "{h}方便发一下照片吗", "请问您还在吗",
        "我先帮您登记一下{x}", "您是说{p}吗", "嗯嗯，了解", "我在的{h}",
        "您指的是上周那单还是今天这单呢", "请问是哪个订单呢？", "方便告诉我下单的手机号吗",
        "请问您说的是这个商品吗[商品链接]", "请问是退货还是换货呢", "您那边收到短信了吗", "请问收件人是您本人吗",
        "是还没收到货吗", "是尺码不合适吗{h}", "发票抬头写错了吗", "是想改地址吗", "价格变了是吗",
        "怎么了呢{h}，是遇到什么问题了吗", "已经签收了是吧", "是要开专票吗{x}",
        "我这边看一下记录，您稍等{x}", "正在帮您核实，请稍候{x}", "亲，截图发我看一下{x}",
    ]),
    ("greeting_closing|needs_probing", [
        "{h}您好，欢迎光临，请问想看哪款{p}呢", "您好，请问是自己用还是送人呢{e}", "在的{h}，请问您想了解哪方面呢",
    ]),
    ("greeting_closing|empathy", [
        "非常抱歉给您带来不好的体验，祝您生活愉快", "给您添麻烦了，有任何问题随时联系我们，祝您生活愉快{e}",
    ]),
    ("informative|proactive_selling", [
        "{h}这款{p}是{mat}的，今天下单还能领{c}元券{x}", "{sz}有货的，现在拍还送运费险{x}，建议尽快下单",
        "我们默认{q}，{n}天左右到，现在下单还有赠品{e}",
    ]),
]

# Taiwanese Traditional written natively (not converted): 親, 唷, 免運, 鑑賞期, 蝦皮...
T_TW: list[tuple[str, list[str]]] = [
    ("greeting_closing", ["親您好唷，歡迎光臨{e}", "您好～很高興為您服務唷", "謝謝親的支持，祝您有美好的一天{e}",
                          "不客氣唷，有問題隨時私訊我們", "感謝您的耐心等候，祝您購物愉快"]),
    ("informative", ["親，這款享有7天鑑賞期唷", "滿999免運喔", "您的訂單已經出貨了，約{n}天到貨唷",
                     "這款是{mat}材質的喔", "鑑賞期不是試用期，商品需保持全新才能退貨唷",
                     "退款會在{n}個工作天內退回您的信用卡", "超商取貨的話大約3天會到唷",
                     "親，優惠券已經退回您的帳戶了喔", "不會不知道的啦，物流那邊都有紀錄，請放心唷"]),
    ("proactive_selling", ["親現在下單再享免運唷", "這款現在有買一送一活動，錯過就沒有了喔",
                           "加購{p2}只要再加{c}元唷，很划算", "親，訂單還沒付款喔，活動今晚就結束了",
                           "推薦您這款升級版，CP值超高的唷"]),
    ("needs_probing", ["請問親平常的尺寸是多少呢", "請問是自己用還是送禮呢", "親的預算大概多少呢？我幫您挑"]),
    ("empathy", ["真的很抱歉造成您的不便", "非常理解您的心情，很抱歉讓您久等了", "不好意思唷，是我們的疏失"]),
    ("empathy|informative", ["很抱歉唷，這個價格沒辦法再調整了，目前已經是最優惠的價格",
                             "不好意思讓您久等，您的包裹已經在配送中，明天會到唷"]),
    ("negative_tone", ["你是不是沒看商品頁啊", "說了好幾次了，{n}天內出貨", "自己不會看嗎", "不買就算了",
                       "你到底要不要買", "這種問題還要問喔", "早就跟你說過了"]),
    ("deflection", ["這個我不清楚耶", "請您自行詢問物流", "以頁面為準喔", "這個我們沒辦法處理唷"]),
    ("other", ["好的唷", "收到喔", "稍等一下唷", "我查詢一下喔", "是的親"]),
]

PREFIX = ["", "", "", "", "嗯嗯，", "好的，", "亲，", "亲爱的，", "哈喽，"]
# Two fragments of these label groups joined into one message get the union of the labels.
PAIRS = [("greeting_closing", "needs_probing"), ("greeting_closing", "informative"),
         ("greeting_closing", "proactive_selling"), ("empathy", "informative"), ("empathy", "greeting_closing"),
         ("informative", "proactive_selling"), ("informative", "needs_probing"), ("negative_tone", "informative"),
         ("negative_tone", "deflection"), ("informative", "greeting_closing"), ("deflection", "greeting_closing"),
         ("other", "informative"), ("other", "needs_probing"), ("proactive_selling", "greeting_closing")]
JOIN = ["，", "。", " ", "！", "~ ", "，另外"]
NAMES = ["美", "芳", "雪", "悦", "乐", "晴", "安", "月"]


def fill(rng: random.Random, tpl: str) -> str:
    out = tpl
    for key in ("p2", "p", "h", "x", "e", "n", "c", "sz", "mat", "q", "name"):
        while "{" + key + "}" in out:
            if key == "p2":
                val = rng.choice(SLOTS["p"])
            elif key == "name":
                val = rng.choice(NAMES)
            else:
                val = rng.choice(SLOTS[key])
            out = out.replace("{" + key + "}", val, 1)
    return out


def main() -> None:
    rng = random.Random(SEED)
    s2tw = opencc.OpenCC("s2twp")
    rows: dict[str, tuple[str, str, str]] = {}
    reps = 9
    for labels, tpls in T:
        for ti, tpl in enumerate(tpls):
            for _ in range(reps):
                prefix = fill(rng, rng.choice(PREFIX)) if labels not in ("other",) else ""
                text = fill(rng, tpl)
                if prefix and "{h}" not in tpl[:4] and rng.random() < 0.5:
                    text = prefix + text
                kind = "zh-Hans"
                if rng.random() < 0.25:
                    text, kind = s2tw.convert(text), "zh-Hant(s2twp)"
                rows.setdefault(text, (labels, kind, f"{labels}#{ti}"))
    single = {lab: tpls for lab, tpls in T if "|" not in lab}
    for _ in range(1100):
        a, b = rng.choice(PAIRS)
        ti = rng.randrange(len(single[a]))
        first = fill(rng, single[a][ti]).rstrip("。！!~ ")
        second = fill(rng, rng.choice(single[b]))
        text = first + rng.choice(JOIN) + second
        kind = "zh-Hans;composed"
        if rng.random() < 0.25:
            text, kind = s2tw.convert(text), "zh-Hant(s2twp);composed"
        labels = "|".join(sorted({a, b} - {"other"}))
        rows.setdefault(text, (labels, kind, f"{a}#{ti}"))
    for labels, tpls in T_TW:
        for ti, tpl in enumerate(tpls):
            for _ in range(reps):
                rows.setdefault(fill(rng, tpl), (labels, "zh-Hant(tw)", f"tw:{labels}#{ti}"))
    # mark hard negatives so evaluation can look at them
    hard = ("不会不知道", "不會不知道", "骗子", "假货", "優惠券已經退回", "优惠券已经退回", "没办法改价", "沒辦法改價",
            "朋友推荐", "没办法再改", "沒辦法再", "没办法操作", "推荐码", "爆款那个", "没有办法加急", "不是不能退")
    items = sorted(rows.items())
    rng.shuffle(items)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "labels", "kind", "group"])
        for text, (labels, kind, group) in items:
            if any(h in text for h in hard):
                kind += ";hard_negative"
            w.writerow([text, labels, kind, group])
    print(f"wrote {len(items)} rows to {OUT}")


if __name__ == "__main__":
    main()
