"""``stepstream.context``: the Context a step receives (laid out as ``workflows.context``)."""

from stepstream.context.context import Context, RunPort, Store

__all__ = ["Context", "RunPort", "Store"]
