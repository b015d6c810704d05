"""Rendering: escaping of hostile chat text, evidence highlighting, CSP, isolation, locale, links."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
import synthetic as syn
from htmlcheck import broken_local_links, check_html

from qa_inspect import schema as S
from qa_inspect.reports.data import ReportData
from qa_inspect.reports.render import ReportIndex, basic_mask_pii, coaching_picks, render_merchant, segments

# --- segments -----------------------------------------------------------------------------


def test_segments_cut_at_evidence_offsets_and_keep_text() -> None:
    text = "abcdefghij"
    segs = segments(text, [(2, 5, "-", 1), (4, 8, "+", 2)])
    assert "".join(s["text"] for s in segs) == text
    assert [(s["text"], s["cls"], s["refs"]) for s in segs] == [
        ("ab", "", []), ("cd", "neg", [1]), ("e", "neg", [1, 2]), ("fgh", "pos", [2]), ("ij", "", [])]


@pytest.mark.parametrize("span", [(-1, -1), (5, 3), (0, 99), (3, 3)])
def test_segments_ignore_invalid_spans(span: tuple[int, int]) -> None:
    segs = segments("hello", [(*span, "-", 1)])
    assert segs == [{"text": "hello", "cls": "", "refs": []}]


def test_segments_drop_highlight_rather_than_leak_pii_across_a_border() -> None:
    text = "电话13812345678谢谢"
    # evidence ends inside the phone number: masking pieces separately would leave digits visible
    segs = segments(text, [(0, 6, "-", 1)], basic_mask_pii)
    joined = "".join(s["text"] for s in segs)
    assert "1381" not in joined and "5678" not in joined
    assert joined == basic_mask_pii(text)
    ok = segments(text, [(0, 2, "-", 1)], basic_mask_pii)
    assert ok[0] == {"text": "电话", "cls": "neg", "refs": [1]}


# --- written reports -----------------------------------------------------------------------


def _pages(idx: ReportIndex) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in idx.all_files()}


def test_every_page_is_valid_html_with_lang_title_and_no_broken_links(rendered: ReportIndex) -> None:
    for path, html in _pages(rendered).items():
        c = check_html(html)
        assert not c.errors, (path.name, c.errors)
        assert not broken_local_links(path, c.links), path.name
    assert len(rendered.agents) == 4 and set(rendered.merchants) == {syn.SHOP_A, syn.SHOP_B}


def test_csp_allows_exactly_the_inline_style_and_script(rendered: ReportIndex) -> None:
    def sha(text: str) -> str:
        return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    for path, html in _pages(rendered).items():
        c = check_html(html)
        assert c.csp and "default-src 'none'" in c.csp and "unsafe-inline" not in c.csp, path.name
        style = re.search(r"<style>(.*?)</style>", html, re.S)
        assert style and sha(style.group(1)) in c.csp
        if path == rendered.index:
            assert len(c.scripts) == 1 and sha(c.scripts[0]) in c.csp
        else:
            assert c.scripts == [] and "script-src 'none'" in c.csp, path.name


def test_hostile_chat_text_is_escaped_not_executed(rendered: ReportIndex) -> None:
    html = rendered.agents[syn.AGENT_A1].read_text(encoding="utf-8")
    assert "<script>document.title" not in html
    assert "&lt;script&gt;document.title=&#34;PW&#34;+&#34;NED&#34;" in html
    assert "<img src=x" not in html and "<b>bold</b>" not in html
    # template syntax in chat text is shown literally, never evaluated
    assert "{{ 7*7 }}" in html and "49" not in re.sub(r"<[^>]+>", "", html).replace("1349", "")
    long_page = rendered.agents[syn.AGENT_A2].read_text(encoding="utf-8")
    assert "&lt;b&gt;不是粗体&lt;/b&gt;" in long_page and syn.LONG in long_page


def test_agent_report_highlights_evidence_at_its_offsets_and_explains(rendered: ReportIndex) -> None:
    html = rendered.agents[syn.AGENT_A1].read_text(encoding="utf-8")
    assert f'<mark class="neg">{syn.WRONG_PRICE}<sup>1</sup></mark>' in html
    assert '<mark class="pos">现在下单还送同款收纳袋<sup>1</sup></mark>' in html
    assert "KB-PRICE" in html and "−20.0" in html and "MODEL:negative_tone" in html
    assert syn.KB_PRICE in html  # coaching: the KB reference answer for the wrong claim
    assert "現在加購第二件打八折" in html  # good selling example from another agent
    assert html.count('<svg class="chart"') == 3 and "data:image/png" not in html  # inline SVG, no PNG


def test_offsets_follow_the_findings_not_a_text_search(report_data: ReportData, tmp_path: Path) -> None:
    f = report_data.findings
    row = f.index[f[S.RULE_ID] == "KB-PRICE"][0]
    f.loc[row, S.EVIDENCE_START] = 0
    f.loc[row, S.EVIDENCE_END] = 4
    from qa_inspect.reports.render import agent_context, make_env

    ctx = agent_context(report_data, syn.AGENT_A1, mask=basic_mask_pii)
    html = make_env().get_template("agent.html").render(ctx)
    assert '<mark class="neg">tb_b<sup>1</sup></mark>' in html
    assert f'<mark class="neg">{syn.WRONG_PRICE}' not in html


def _other_shop_markers(shop: str) -> list[str]:
    if shop == syn.SHOP_A:
        return [syn.AGENT_B1, syn.AGENT_B2, syn.BUYER_B, "twbuyer_momo", syn.SHOP_B, "小島選物", "別家"]
    return [syn.AGENT_A1, "con</td>", syn.BUYER_A, "buyer_a_two", syn.SHOP_A, "晨光家居", "爱买不买"]


@pytest.mark.parametrize("shop", [syn.SHOP_A, syn.SHOP_B])
def test_merchant_report_shows_only_its_shop_and_masks_buyers(rendered: ReportIndex, shop: str) -> None:
    html = rendered.merchants[shop].read_text(encoding="utf-8")
    for marker in _other_shop_markers(shop):
        assert marker not in html, marker
    for secret in (syn.BUYER_A, syn.BUYER_B, syn.PHONE_A, syn.PHONE_B, "12345678"):
        assert secret not in html, secret
    own_agent = syn.AGENT_A1 if shop == syn.SHOP_A else syn.AGENT_B2
    assert own_agent in html


def test_merchant_render_filters_before_the_template(report_data: ReportData) -> None:
    # Even if the caller hands over everything, only shop B's rows are rendered.
    html = render_merchant(report_data, syn.SHOP_B, mask=basic_mask_pii)
    assert syn.AGENT_A1 not in html and "晨光" not in html and syn.AGENT_B2 in html
    assert syn.PHONE_B not in html and "已記下您的手機" in html
    unmasked = render_merchant(report_data, syn.SHOP_B, mask=None)
    assert syn.PHONE_B in unmasked  # proves the masked checks are not vacuous
    assert syn.BUYER_A in render_merchant(report_data, syn.SHOP_A, mask=None)


def test_language_follows_the_shop(rendered: ReportIndex) -> None:
    tw = rendered.merchants[syn.SHOP_B].read_text(encoding="utf-8")
    cn = rendered.merchants[syn.SHOP_A].read_text(encoding="utf-8")
    assert 'lang="zh-TW"' in tw and "店鋪客服質檢報告" in tw and "沒有了" in tw
    assert 'lang="zh-CN"' in cn and "店铺客服质检报告" in cn
    # transcripts stay as written: Traditional chat text is not converted in a Simplified page
    agent_b = rendered.agents[syn.AGENT_B2].read_text(encoding="utf-8")
    assert "客服質檢報告" in agent_b and "運費怎麼算" in agent_b


def test_file_names_cannot_escape_the_output_folder(rendered: ReportIndex) -> None:
    agents_dir = rendered.out_dir / "agents"
    for agent, path in rendered.agents.items():
        assert path.parent == agents_dir, agent
        assert path.stem.lower() not in ("con", "x", "..")
    assert not (rendered.out_dir.parent.parent / "x.html").exists()


def test_overview_lists_every_agent_queue_and_rule(rendered: ReportIndex) -> None:
    html = rendered.index.read_text(encoding="utf-8")
    for path in rendered.agents.values():
        assert f'href="agents/{path.name}"' in html
    assert "veto ATT-001" in html and "model/rule disagree" in html
    for rule in ("KB-PRICE", "ATT-001", "SELL-003", "RESP-FIRST"):
        assert f"<code>{rule}</code>" in html
    assert 'class="sortable"' in html and 'class="filter"' in html


def test_coaching_pack_is_printable_and_masked(rendered: ReportIndex, report_data: ReportData) -> None:
    picks = coaching_picks(report_data)
    assert picks[0] == f"{syn.SHOP_A}:a4" and f"{syn.SHOP_B}:b1" in picks
    html = rendered.coaching.read_text(encoding="utf-8")
    assert "@media print" in html and "page-break" in html
    assert syn.PHONE_A not in html and syn.BUYER_A not in html and syn.BUYER_B not in html
    assert "爱买不买" in html and syn.KB_PRICE in html


def test_missing_columns_fail_fast_naming_them(report_data: ReportData, tmp_path: Path) -> None:
    from qa_inspect.errors import BugError
    from qa_inspect.reports import render_reports

    bad = ReportData(**{**report_data.__dict__, "agent_kpis": report_data.agent_kpis.drop(columns=["reply_rate"])})
    with pytest.raises(BugError, match="reply_rate"):
        render_reports(bad, tmp_path)


def test_an_empty_run_still_renders_valid_pages(report_data: ReportData, tmp_path: Path) -> None:
    from qa_inspect.reports import render_reports

    empty = ReportData(run_id="empty", generated_at=report_data.generated_at,
                       conversations=report_data.conversations.iloc[0:0], messages=S.empty_messages(),
                       findings=S.empty_findings(), shops=report_data.shops)
    idx = render_reports(empty, tmp_path)
    assert idx.agents == {} and idx.merchants == {}
    for path in idx.all_files():
        assert not check_html(path.read_text(encoding="utf-8")).errors


def test_csp_directives_are_exactly_the_minimum(rendered: ReportIndex) -> None:
    """Parse the policy: nothing beyond what the page needs, no wildcard or unsafe-* source."""
    for path, html in _pages(rendered).items():
        csp = check_html(html).csp or ""
        directives = {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}
        script = directives.get("script-src", [])
        assert set(directives) == {"default-src", "img-src", "style-src", "script-src", "base-uri", "form-action"}
        assert directives["default-src"] == ["'none'"] and directives["img-src"] == ["data:"]
        assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'none'"]
        assert len(directives["style-src"]) == 1 and directives["style-src"][0].startswith("'sha256-")
        if path == rendered.index:  # the overview's table.js, by hash
            assert len(script) == 1 and script[0].startswith("'sha256-")
        else:
            assert script == ["'none'"], path.name
        assert not re.search(r"unsafe-|\*|https?:|'self'|strict-dynamic", csp), path.name


def test_coaching_suggestion_falls_back_to_the_knowledge_finding_reference() -> None:
    """The pipeline passes no FAQ answers: a wrong-knowledge finding still yields its KB reference."""
    from dataclasses import replace

    from qa_inspect.reports.render import stats_of

    data = syn.build_report_data()
    f = data.findings.copy()
    f.loc[f[S.RULE_ID] == "KB-PRICE", S.EXPLANATION] = "报价 199 元，知识库: 四件套 售价 259 元"
    no_faq = replace(data, kb_answers={}, findings=f)
    got = [s for per_agent in stats_of(no_faq).suggestions.values() for s in per_agent]
    assert {"rule_id": "KB-PRICE", "said": syn.WRONG_PRICE, "explanation": "报价 199 元，知识库: 四件套 售价 259 元",
            "answer": "四件套 售价 259 元"} in got
    # rule findings (not knowledge) never invent a reference
    assert all(s["rule_id"].startswith("KB-") for s in got)
