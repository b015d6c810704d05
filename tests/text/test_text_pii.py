"""PII masking in Simplified and Traditional; masking keeps the length (offsets stay valid)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect.text.pii import mask_pii

CASES = [
    ("手机13812345678请联系", "手机138****5678请联系"),
    ("电话 +86 138 1234 5678", "电话 +86 138 **** 5678"),
    ("手機 0912-345-678 謝謝", "手機 0912-***-678 謝謝"),
    ("手機0912345678", "手機0912***678"),
    ("座机 0571-88886666", "座机 0571-****6666"),
    ("市話 (02)2345-6789", "市話 (02)****-6789"),
    ("身份证110101199003071234", "身份证110*************34"),
    ("身分證字號A123456789", "身分證字號A1******89"),
    ("邮箱 zhang.san@qq.com", "邮箱 z********@qq.com"),
    ("订单号230987654321987", "订单号***********1987"),
    ("快递单SF1234567890123", "快递单***********0123"),
    ("地址：浙江省杭州市西湖区文三路123号4栋501室，谢谢", "地址：浙江省杭州市西湖区*************，谢谢"),
    ("台北市大安區忠孝東路四段123號5樓之2 謝謝", "台北市大安區************** 謝謝"),
]


@pytest.mark.parametrize(("text", "masked"), CASES, ids=[c[0][:12] for c in CASES])
def test_masks(text: str, masked: str) -> None:
    assert mask_pii(text) == masked
    assert len(mask_pii(text)) == len(text)


@pytest.mark.parametrize("text", ["这款价格199元，满299减30", "2026-11-23 20:15:03 发货", "[电话x] [地址x] [订单x]",
                                  "我们发货地在广州，路上3天左右", "第2件半价", "", "USB-C 20W 快充"])
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert mask_pii(text) == text


# Gaps reported by the reports engineer: mixed order numbers, dated PDD orders, Chinese-numeral
# house numbers, contact ids after a keyword (Simplified and Traditional).
MORE_CASES = [
    ("订单号250101ABCD1234查一下", "订单号**********1234查一下"),
    ("訂單編號 250101ABCD1234 謝謝", "訂單編號 **********1234 謝謝"),
    ("拼多多订单231201-123456789012345", "拼多多订单******-***********2345"),
    ("訂單231201-123456789012345已出貨", "訂單******-***********2345已出貨"),
    ("寄到北京市朝阳区建国路八十八号", "寄到北京市朝阳区*******"),
    ("建国路八十八号3栋，谢谢", "*********，谢谢"),
    ("台中市西區中山路一段七十五號", "台中市西區*********"),
    ("台北市大安區忠孝東路四段100號5樓", "台北市大安區************"),
    ("地址是上海市浦东新区张江路二百号五楼", "地址是上海市浦东新区********"),
    ("加我微信 abc_12345", "加我微信 a**_*****"),
    ("vx:lily8888", "vx:l*******"),
    ("VX号：lily8888 私聊", "VX号：l******* 私聊"),
    ("v信 lily_2026", "v信 l***_****"),
    ("wx lily8888", "wx l*******"),
    ("加我微信號是tw_mei_88", "加我微信號是t*_***_**"),
    ("加賴 meiyan_tw 給你優惠", "加賴 m*****_** 給你優惠"),
    ("LINE ID: meiyan88", "LINE ID: m*******"),
    ("QQ 123456789", "QQ *******89"),
    ("qq号：87654321", "qq号：******21"),
    ("加扣扣12345678聊", "加扣扣******78聊"),
    ("加我企鵝 998877665", "加我企鵝 *******65"),
]


@pytest.mark.parametrize(("text", "masked"), MORE_CASES, ids=[c[0][:12] for c in MORE_CASES])
def test_masks_reported_gaps(text: str, masked: str) -> None:
    assert mask_pii(text) == masked
    assert len(mask_pii(text)) == len(text)


@pytest.mark.parametrize("text", [
    "这款299元，台湾售价NT$590，满2件9折", "NT$1,290 含運", "买3件送1件，库存还有120件",
    "2026-11-25 20:15 前下单", "2026/11/25 下午8点", "20:15:03 已发货",
    "身高1.8m，床单200x230cm", "尺寸 1800x2000x1200mm", "型号JK-E03和JK-E05有什么区别",
    "容量5000mAh，支持20W快充，65W氮化镓", "iPhone15 Pro Max 256GB", "RTX4090显卡",
    "这段时间11号前能到吗", "我这里3号能收到吗", "快递在路上三号能到吗", "大概300公里2号到",
    "我们小区只有这一栋楼没信号", "商场那边一楼有门店", "微信支付可以吗", "可以用微信付款，QQ音乐会员送一个月", "加我微信", "我们没有LINE客服哦",
    "online 客服 9点上班", "第二件半价，两件起发", "十一号之前发货",
])
def test_leaves_prices_dates_sizes_and_models_alone(text: str) -> None:
    assert mask_pii(text) == text


def test_masking_is_idempotent_and_keeps_offsets() -> None:
    """Masking already masked text changes nothing; every unmasked character stays where it was."""
    text = "手機0912345678，地址台北市大安區忠孝東路四段100號5樓，訂單231201-123456789012345，vx:lily8888"
    once = mask_pii(text)
    assert mask_pii(once) == once
    assert len(once) == len(text)
    assert all(a == b for a, b in zip(text, once, strict=True) if b != "*")
    assert "lily" not in once and "忠孝" not in once and "231201" not in once and "345678" not in once


_ALPHABET = "0123456789abcxX-_:： @.路街段里号號楼樓栋之一二十八中山市區区省微信賴扣QqVvWw这那，"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_any_text_keeps_length_and_unmasked_characters(text: str) -> None:
    """Evidence offsets depend on this: masking only ever turns characters into ``*``."""
    masked = mask_pii(text)
    assert len(masked) == len(text)
    assert all(a == b or b == "*" for a, b in zip(text, masked, strict=True))
