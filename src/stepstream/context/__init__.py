"""``stepstream.context``: the Context a step receives, its state store, and serializers.

Laid out as ``workflows.context`` in LlamaIndex: :mod:`stepstream.context.context`
(``Context``), :mod:`stepstream.context.state_store` (``DictState``,
``InMemoryStateStore``) and :mod:`stepstream.context.serializers`.
"""

from stepstream.context.context import Context
from stepstream.context.serializers import BaseSerializer, JsonSerializer, PickleSerializer

__all__ = ["BaseSerializer", "Context", "JsonSerializer", "PickleSerializer"]
