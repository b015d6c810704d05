"""PII masking in Simplified and Traditional; masking keeps the length (offsets stay valid)."""

from __future__ import annotations

import pytest

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
