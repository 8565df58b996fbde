"""A persona that cannot look orders up never states an order's status.

Asked "What's the status of my order NB-51377?", a 1.5B model with a shop's
FAQ as its knowledge answered "The order NB-51377 is still Confirmed.": one
of the statuses the FAQ lists, invented for this customer. An invented order
status is the worst thing a support agent can say, and no prompt rule stopped
it. Without a way to look an order up (a tool), the honest answer is always
the same: the agent cannot see orders from here, and a colleague can. So:

* a question about one's own order's state (where it is, whether it was sent,
  when it arrives), or naming an order number, is answered with the
  template's `no_order_lookup` text, without asking the model;
* a reply that states the status of "your order" anyway (the customer asked
  in words the first rule does not know) is replaced by that text too.

A question about how orders work ("where can I see how far along my order
is?", "what does an order number look like?") is not about one order: the
knowledge answers it, and the model does.

With a tool that may look the order up (the support persona's demo order
server, a client's tool through `serve`; issue 23), the model answers the
question, and a status is stated only from what a tool returned in this
reply: until a lookup succeeded, a sentence stating one is still replaced
(reply/pipeline.py, `persona_stages`).
"""

from __future__ import annotations

import re

# An order reference: letters and digits with at least four digits, as shops
# write them ("NB-51377", "FS1093412", "#100234"), or digits after "order".
_REFERENCE = re.compile(
    r"(?<![\w-])(?:[A-Z]{1,4}-?\d{4,}|#\d{4,})(?![\w-])|(?:order|订单)(?:号| number| no\.?| #)?[\s:：#]*(\d{5,})",
    re.IGNORECASE,
)
_OWN_ORDER = re.compile(r"\bmy (?:\w+ )?(?:order|parcel|package|delivery|shipment)s?\b|我的(?:订单|包裹|快递)", re.I)
# What a customer asks about the state of an order.
_STATE = re.compile(
    r"\b(?:where|status|state|track\w*|arriv\w*|deliver\w*|ship(?:ped)?|sent|dispatch\w*|come|coming|when|"
    r"late|delay\w*|yet|lost|missing)\b|到哪|在哪|状态|进度|发货|到货|送达|物流|什么时候|还没|没收到|寄出",
    re.IGNORECASE,
)
# Questions about how orders work in general, which the knowledge may answer.
_HOW_TO = re.compile(
    r"\b(?:how (?:do|can|should) (?:i|you|we)|where (?:do|can|could) (?:i|you|we) (?:see|check|find|follow|track)|"
    r"how (?:long|far)|what does|what is the format|look like)\b|怎么|如何|在哪里(?:可以|能)?(?:查看|查询|看到)",
    re.IGNORECASE,
)
# A reply stating the state of the customer's order.
_STATUS_CLAIM = re.compile(
    r"\b(?:your|the|this) order(?: (?:number |no\.? |#)?[A-Z]{0,4}-?\d{4,})?(?: has| is| was| will be| should be)"
    r"(?: already| still| currently| now| probably| likely)?(?: been)? "
    r"(?:confirmed|dispatched|delivered|shipped|sent|packed|processed|in assembly|in (?:the )?final check|"
    r"in transit|on (?:its|the) way|out for delivery|being (?:assembled|processed|prepared|packed|shipped)|"
    r"delayed|ready|expected|due|scheduled|arriv\w+|with (?:the )?(?:courier|carrier)|"
    # "… is currently in the "Received" status", as the 1.5B put it
    r"in (?:the )?[\"“'«]?[\w -]{1,30}[\"”'»]? (?:status|state|stage))\b"
    # "The status of your order NB-51377 is …", "Your order's status is …"
    r"|\b(?:the )?status of (?:your|the|this) order(?: (?:number |no\.? |#)?[A-Z]{0,4}-?\d{4,})? (?:is|was)\b"
    r"|\b(?:your|the|this) order(?: [A-Z]{0,4}-?\d{4,})?(?:'s)? status (?:is|was)\b"
    r"|订单[^。！？\n]{0,16}(?:已经|已|正在|目前|还在|仍在|状态是|状态为)[^。！？\n]{0,6}"
    r"(?:发货|发出|送达|配送|处理|运输|签收|出库|打包|组装|确认|派送)",
    re.IGNORECASE,
)


def order_reference(question: str) -> str | None:
    """The order number a message names, if any."""
    found = _REFERENCE.search(question)
    if found is None:
        return None
    return (found.group(1) or found.group(0)).strip()


def asks_about_an_order(question: str) -> bool:
    """Whether `question` asks about the state of one particular order: one it
    names by number, or "my order" with a word about where it is or when it
    comes, unless it asks how orders work in general."""
    if _HOW_TO.search(question) and order_reference(question) is None:
        return False
    if order_reference(question) is not None:
        return bool(_STATE.search(question) or _OWN_ORDER.search(question))
    return bool(_OWN_ORDER.search(question) and _STATE.search(question))


def states_order_status(reply: str) -> bool:
    return bool(_STATUS_CLAIM.search(reply))
