"""UI labels per locale: Simplified is written by hand, Traditional derived with OpenCC.

Only labels are converted; chat transcripts are always shown as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

import opencc

ZH_CN: Mapping[str, str] = MappingProxyType({
    "app": "客服质检",
    "agent_report": "客服质检报告",
    "merchant_report": "店铺客服质检报告",
    "overview": "质检总览",
    "coaching_pack": "辅导资料",
    "run": "批次",
    "generated": "生成时间",
    "period": "统计期间",
    "agent": "客服",
    "agents": "客服",
    "shop": "店铺",
    "shops": "店铺",
    "platform": "平台",
    "conversations": "会话数",
    "messages": "消息数",
    "first_response": "平均首次响应",
    "avg_response": "平均响应",
    "reply_rate": "回复率",
    "slow_replies": "慢回复",
    "unanswered": "未回复",
    "conversion": "询单转化率",
    "sales": "询单成交额",
    "per_day": "日均咨询量",
    "score": "质检得分",
    "mean_score": "平均得分",
    "team": "团队",
    "this_agent": "本人",
    "dimension": "维度",
    "product_knowledge": "商品知识",
    "selling": "销售技巧",
    "attitude": "服务态度",
    "responsiveness": "响应时效",
    "kpis": "关键指标",
    "dimension_scores": "维度得分（对比团队）",
    "trend": "每日趋势",
    "distribution": "得分分布",
    "top_deductions": "主要扣分项",
    "rule": "规则",
    "count": "次数",
    "points": "分值",
    "example": "示例",
    "worst": "待改进会话",
    "best": "优秀会话",
    "transcript": "会话记录",
    "findings": "质检发现",
    "source": "来源",
    "source_rule": "规则",
    "source_model": "模型",
    "source_knowledge": "知识库",
    "coaching": "辅导建议",
    "kb_answer": "知识库参考答案",
    "good_selling": "其他客服的优秀销售示例",
    "no_data": "暂无数据",
    "customer": "买家",
    "bot": "机器人",
    "system": "系统",
    "grade": "等级",
    "veto": "一票否决",
    "human_review": "人工复核",
    "auto_total": "自动评分",
    "review_queue": "待复核队列",
    "reason": "原因",
    "priority": "优先级",
    "rule_hits": "规则命中统计",
    "reports": "报告",
    "filter": "筛选",
    "issues": "需要关注的问题",
    "issue_knowledge": "商品信息错误",
    "issue_attitude": "态度问题",
    "issue_responsiveness": "回复慢",
    "full_report_attached": "完整报告见附件（HTML）。",
    "seconds": "秒",
    "conversation": "会话",
    "findings_count": "发现数",
    "open_report": "查看",
    "deduction": "扣分",
    "deduction_count": "扣分项数",
    "bonus": "加分",
    "night": "日期",
    "print_hint": "可直接打印（浏览器 打印 → 另存为 PDF）。",
    "masked_note": "买家昵称与联系方式已脱敏。",
    "mail_subject": "客服质检报告",
})


@lru_cache(maxsize=4)
def labels_for(locale: str) -> Mapping[str, str]:
    """Labels for a shop locale: zh-TW gets OpenCC s2tw of the Simplified labels."""
    if locale == "zh-TW":
        conv = opencc.OpenCC("s2tw")
        return MappingProxyType({k: conv.convert(v) for k, v in ZH_CN.items()})
    return ZH_CN
