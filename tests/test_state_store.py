"""The state store: DictState, paths, copies, the write lock, snapshots, and typed state in runs."""

import asyncio
import json
import threading
import warnings
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic import Field

from _helpers import NeedsArgs
from _helpers import Required
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.context import JsonSerializer
from stepstream.context import PickleSerializer
from stepstream.context.state_store import KNOWN_UNSERIALIZABLE_KEYS
from stepstream.context.state_store import MAX_DEPTH
from stepstream.context.state_store import DictState
from stepstream.context.state_store import InMemoryStateStore
from stepstream.context.state_store import StateStore
from stepstream.context.state_store import UnserializableKeyWarning


class Profile(BaseModel):
    name: str = ""
    tags: list[str] = Field(default_factory=list)


class AppState(BaseModel):
    count: int = 0
    profile: Profile = Field(default_factory=Profile)
    history: list[int] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class MoreState(AppState):
    extra: str = "x"


class Unrelated(BaseModel):
    other: int = 0


class Tagged(DictState):
    label: str = "t"


def dict_store(**values: Any) -> InMemoryStateStore[DictState]:
    """A store whose state is a DictState holding ``values``."""
    return InMemoryStateStore(DictState(**values))


# -- DictState -----------------------------------------------------------------------------


def test_dict_state_item_and_attribute_access() -> None:
    """DictState keys are readable and writable as items and as attributes."""
    state = DictState(a=1)
    state.b = 2
    state["c"] = 3
    assert (state.a, state["b"], state.c) == (1, 2, 3)
    assert state.get("missing") is None
    assert state.get("missing", 0) == 0
    assert "a" in state
    assert "z" not in state


def test_dict_state_mapping_methods() -> None:
    """keys, values, items, len and iteration work on the dynamic keys."""
    state = DictState(a=1, b=2)
    assert list(state.keys()) == ["a", "b"]
    assert list(state.values()) == [1, 2]
    assert list(state.items()) == [("a", 1), ("b", 2)]
    assert len(state) == 2
    assert list(state) == ["a", "b"]
    assert bool(DictState()) is True


def test_dict_state_to_dict_is_the_live_mapping() -> None:
    """to_dict() returns the dict that holds the keys, not a copy."""
    state = DictState(a=1)
    state.to_dict()["b"] = 2
    assert state["b"] == 2


def test_dict_state_missing_attribute_and_item() -> None:
    """A missing attribute raises AttributeError, a missing item KeyError."""
    state = DictState()
    with pytest.raises(AttributeError, match="'DictState' object has no attribute 'nope'"):
        _ = state.nope
    with pytest.raises(KeyError):
        _ = state["nope"]


def test_dict_state_declared_fields_are_not_items() -> None:
    """In a DictState subclass, declared fields are attributes and not mapping keys."""
    state = Tagged(label="L", k=1)
    assert state.label == "L"
    assert dict(state.items()) == {"k": 1}
    with pytest.raises(KeyError):
        _ = state["label"]


def test_dict_state_dump_and_validate_round_trip() -> None:
    """model_dump() adds '_data' when there are keys, and model_validate() restores them."""
    assert DictState().model_dump() == {}
    assert Tagged(k=1).model_dump() == {"label": "t", "_data": {"k": 1}}
    back = Tagged.model_validate(Tagged(label="z", k=[1, 2]).model_dump())
    assert back.label == "z"
    assert back["k"] == [1, 2]


def test_dict_state_copy_owns_its_keys() -> None:
    """A model_copy() of a DictState can be changed without changing the original."""
    state = DictState(a=1)
    clone = state.model_copy()
    clone["b"] = 2
    assert "b" not in state


# -- get -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_follows_keys_indexes_and_attributes() -> None:
    """Path segments are dict keys, DictState keys, list indexes and model attributes."""
    store = dict_store(user={"profile": {"name": "Ada"}}, items=[10, 20], p=Profile(name="B"))
    assert await store.get("user.profile.name") == "Ada"
    assert await store.get("items.1") == 20
    assert await store.get("items.-1") == 20
    assert await store.get("p.name") == "B"
    typed = InMemoryStateStore(AppState(profile=Profile(tags=["a", "b"])))
    assert await typed.get("profile.tags.0") == "a"
    assert await typed.get("count") == 0


@pytest.mark.asyncio
async def test_get_of_the_empty_path_is_the_whole_state() -> None:
    """get('') returns the whole state (a copy equal to it)."""
    store = InMemoryStateStore(AppState(count=2))
    whole = await store.get("")
    assert whole == AppState(count=2)


@pytest.mark.asyncio
async def test_get_never_returns_mapping_methods_of_dict_state() -> None:
    """A DictState segment named like a method (items, keys) is a key, never the method."""
    store = dict_store()
    assert await store.get("items", default="none") == "none"
    await store.set("items", [1])
    assert await store.get("items") == [1]


@pytest.mark.asyncio
async def test_keys_named_like_dict_state_attributes_stay_keys() -> None:
    """set() of keys named _data, keys or model_dump stores plain keys, never attributes."""
    store = dict_store()
    for key in ("_data", "keys", "model_dump"):
        await store.set(key, key.upper())
    state = await store.get_state()
    assert state.to_dict() == {"_data": "_DATA", "keys": "KEYS", "model_dump": "MODEL_DUMP"}
    assert await store.get("keys") == "KEYS"


@pytest.mark.asyncio
async def test_get_returns_the_default_for_missing_paths() -> None:
    """A missing path with a default returns the default, including None."""
    store = dict_store(a={"b": 1})
    assert await store.get("a.c", default=5) == 5
    assert await store.get("x.y.z", default=None) is None


@pytest.mark.parametrize(
    ("path", "where"),
    [
        pytest.param("nope", "the state has no key 'nope' (keys: 'a', 'items')", id="top"),
        pytest.param("a.c", "'a' has no key 'c' (keys: 'b')", id="nested-key"),
        pytest.param("items.5", "'items' has no index 5 (length 2)", id="index"),
        pytest.param("items.x", "'items' is a list: use an integer index, not 'x'", id="not-int"),
        pytest.param("a.b.c", "'a.b' (int) has no attribute 'c'", id="into-a-value"),
    ],
)
@pytest.mark.asyncio
async def test_missing_path_message_names_the_failing_segment(path: str, where: str) -> None:
    """A missing path without default raises ValueError naming the path, the failure, the fix."""
    store = dict_store(a={"b": 1}, items=[1, 2])
    with pytest.raises(ValueError, match="not found") as info:
        await store.get(path)
    assert str(info.value) == (
        f"path {path!r} not found in the state: {where}; check the path, set it first with "
        f"`await ctx.store.set({path!r}, value)`, or pass `default=`"
    )


@pytest.mark.asyncio
async def test_missing_field_of_a_typed_state_lists_its_fields() -> None:
    """A typed state's missing field is reported with the model's fields."""
    store = InMemoryStateStore(Profile())
    expected = r"the state \(Profile\) has no field 'nme' \(fields: 'name', 'tags'\)"
    with pytest.raises(ValueError, match=expected):
        await store.get("nme")


@pytest.mark.asyncio
async def test_paths_longer_than_max_depth_are_refused() -> None:
    """A path of more than MAX_DEPTH segments raises ValueError, even with a default."""
    assert MAX_DEPTH == 1000
    store = dict_store()
    too_long = ".".join(["a"] * (MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="path has 1001 segments, more than MAX_DEPTH"):
        await store.get(too_long, default=None)
    with pytest.raises(ValueError, match="more than MAX_DEPTH"):
        await store.set(too_long, 1)
    assert await store.get(".".join(["a"] * MAX_DEPTH), default="ok") == "ok"


# -- set -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_set_creates_intermediate_dicts() -> None:
    """set('a.b', 1) on an empty state creates {'a': {'b': 1}}."""
    store = dict_store()
    await store.set("a.b", 1)
    assert await store.get("a") == {"b": 1}
    await store.set("a.c.d", 2)
    assert await store.get("a") == {"b": 1, "c": {"d": 2}}


@pytest.mark.asyncio
async def test_set_writes_list_items_and_model_attributes() -> None:
    """set follows list indexes and model attributes to the value it replaces."""
    store = InMemoryStateStore(AppState(history=[1, 2], profile=Profile(name="a")))
    await store.set("history.0", 9)
    await store.set("profile.name", "b")
    await store.set("meta.k.j", True)
    await store.set("count", 4)
    state = await store.get_state()
    assert state.history == [9, 2]
    assert state.profile.name == "b"
    assert state.meta == {"k": {"j": True}}
    assert state.count == 4


@pytest.mark.asyncio
async def test_set_copies_the_containers_along_its_path() -> None:
    """Values read before a set keep their content: set copies on write, never in place."""
    store = InMemoryStateStore(AppState(profile=Profile(name="a"), meta={"k": {"n": 1}}))
    meta_before = await store.get("meta")
    profile_before = await store.get("profile")
    snapshot = await store.get_state()
    await store.set("meta.k.n", 2)
    await store.set("profile.name", "b")
    assert meta_before == {"k": {"n": 1}}
    assert profile_before.name == "a"
    assert snapshot.meta == {"k": {"n": 1}}
    assert await store.get("meta.k.n") == 2


@pytest.mark.asyncio
async def test_set_with_an_empty_path_is_refused() -> None:
    """set('') raises ValueError pointing at set_state."""
    with pytest.raises(ValueError, match=r"path cannot be empty: .* use set_state\(\.\.\.\)"):
        await dict_store().set("", 1)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param(
            "nope",
            "cannot set path 'nope': the state (AppState) has no field 'nope' (fields: 'count', "
            "'profile', 'history', 'meta'); check the path, or add the field to AppState",
            id="unknown-field",
        ),
        pytest.param(
            "history.5",
            "cannot set path 'history.5': 'history' has no index 5 (length 1); to add an item, "
            "set the whole list (or check the path)",
            id="index-out-of-range",
        ),
        pytest.param(
            "count.x",
            "cannot set path 'count.x': 'count' (int) cannot take 'x': 'int' object has no "
            "attribute 'x'; check the path",
            id="into-a-value",
        ),
    ],
)
@pytest.mark.asyncio
async def test_set_that_cannot_be_written_names_the_segment(path: str, message: str) -> None:
    """A path that cannot be written raises ValueError naming it, and leaves the state alone."""
    store = InMemoryStateStore(AppState(history=[1]))
    with pytest.raises(ValueError, match="cannot set path") as info:
        await store.set(path, 1)
    assert str(info.value) == message
    assert await store.get_state() == AppState(history=[1])


# -- get_state / set_state / clear ---------------------------------------------------------


@pytest.mark.asyncio
async def test_get_state_returns_a_copy() -> None:
    """get_state() returns a copy: changing it does not change the store."""
    store = dict_store(a=1)
    copy = await store.get_state()
    copy["b"] = 2
    assert "b" not in await store.get_state()
    typed = InMemoryStateStore(AppState())
    state = await typed.get_state()
    state.count = 7
    assert await typed.get("count") == 0


@pytest.mark.asyncio
async def test_set_state_replaces_with_the_same_type_or_a_subclass() -> None:
    """set_state with the store's type or a subclass replaces the state."""
    store = InMemoryStateStore(AppState())
    await store.set_state(AppState(count=3))
    assert await store.get("count") == 3
    await store.set_state(MoreState(count=4, extra="y"))
    state = await store.get_state()
    assert isinstance(state, MoreState)
    assert state.extra == "y"


@pytest.mark.asyncio
async def test_set_state_merges_a_parent_type_into_the_state() -> None:
    """set_state with a parent-type instance merges its fields and keeps the subclass's."""
    store = InMemoryStateStore(MoreState(count=1, extra="kept"))
    await store.set_state(AppState(count=5))
    state = await store.get_state()
    assert isinstance(state, MoreState)
    assert (state.count, state.extra) == (5, "kept")


@pytest.mark.asyncio
async def test_set_state_of_an_unrelated_type_is_refused() -> None:
    """set_state with an unrelated model raises ValueError naming both types."""
    store: InMemoryStateStore[Any] = InMemoryStateStore(AppState())
    with pytest.raises(ValueError, match="set_state got a Unrelated, but the state is a AppState"):
        await store.set_state(Unrelated())


@pytest.mark.asyncio
async def test_clear_resets_to_the_current_type_defaults() -> None:
    """clear() resets to a default instance of the state's current type."""
    store = InMemoryStateStore(AppState(count=2))
    await store.set_state(MoreState(count=3, extra="y"))
    await store.clear()
    assert await store.get_state() == MoreState()
    dicts = dict_store(a=1)
    await dicts.clear()
    assert len(await dicts.get_state()) == 0


@pytest.mark.asyncio
async def test_clear_without_defaults_is_refused() -> None:
    """clear() on a model with required fields raises ValueError naming them."""
    store = InMemoryStateStore(Required(name="a"))
    expected = r"Required\(\) fails without arguments \(required fields: 'name'"
    with pytest.raises(ValueError, match=expected):
        await store.clear()
    assert await store.get("name") == "a"


def test_state_type_is_the_initial_states_class() -> None:
    """state_type is the class of the state the store was created with."""
    assert InMemoryStateStore(AppState()).state_type is AppState
    assert dict_store().state_type is DictState


def test_in_memory_store_is_a_state_store() -> None:
    """InMemoryStateStore satisfies the StateStore protocol."""
    assert isinstance(dict_store(), StateStore)


def test_store_can_be_created_outside_a_loop_and_used_in_several() -> None:
    """A store built outside a running loop works in one asyncio.run() after another."""
    store = dict_store()

    async def bump() -> None:
        async with store.edit_state() as state:
            state["n"] = state.get("n", 0) + 1
        await store.set("done", True)

    asyncio.run(bump())
    asyncio.run(bump())
    assert asyncio.run(store.get("n")) == 2


# -- edit_state ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_edit_state_commits_on_exit_and_readers_see_the_old_state_until_then() -> None:
    """Inside edit_state readers (even in the block) see the committed state; the exit commits."""
    store = InMemoryStateStore(AppState(history=[1]))
    async with store.edit_state() as state:
        state.count = 5
        state.history.append(2)
        assert await store.get("count") == 0
        assert (await store.get_state()).history == [1]
    assert await store.get("count") == 5
    assert await store.get("history") == [1, 2]


@pytest.mark.asyncio
async def test_edit_state_discards_the_copy_when_the_block_raises() -> None:
    """An exception inside edit_state leaves the committed state unchanged."""
    store = dict_store(a=[1])

    async def fail_mid_edit() -> None:
        async with store.edit_state() as state:
            state["a"].append(2)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await fail_mid_edit()
    assert await store.get("a") == [1]


@pytest.mark.asyncio
async def test_edit_state_keeps_uncopyable_values_by_reference() -> None:
    """A value deepcopy cannot copy (a lock) is shared by the edit copy, not an error."""
    lock = threading.Lock()
    store = dict_store(lock=lock, n=1)
    async with store.edit_state() as state:
        assert state["lock"] is lock
        state["n"] = 2
    assert await store.get("lock") is lock
    assert await store.get("n") == 2


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param(lambda s: s.set("k", 1), id="set"),
        pytest.param(lambda s: s.set_state(DictState()), id="set_state"),
        pytest.param(lambda s: s.clear(), id="clear"),
    ],
)
@pytest.mark.asyncio
async def test_writers_inside_edit_state_raise(writer: Any) -> None:
    """set, set_state and clear inside an edit_state block of the same task raise RuntimeError."""
    store = dict_store()
    expected = r"^writer called inside edit_state: mutate the yielded state instead$"
    with pytest.raises(RuntimeError, match=expected):
        async with store.edit_state():
            await writer(store)
    assert len(await store.get_state()) == 0


@pytest.mark.asyncio
async def test_nested_edit_state_raises() -> None:
    """An edit_state inside another of the same task raises RuntimeError."""
    store = dict_store()
    with pytest.raises(RuntimeError, match="writer called inside edit_state"):
        async with store.edit_state(), store.edit_state():
            pass


@pytest.mark.asyncio
async def test_writers_of_other_tasks_wait_for_the_edit() -> None:
    """A set from another task waits for the edit_state block, then applies on top of it."""
    store = dict_store(n=0)
    order: list[str] = []

    async def other_writer() -> None:
        await store.set("other", True)
        order.append("other wrote")

    async with store.edit_state() as state:
        task = asyncio.create_task(other_writer())
        await asyncio.sleep(0.01)
        order.append("edit done")
        state["n"] = 1
    await task
    assert order == ["edit done", "other wrote"]
    assert await store.get("n") == 1
    assert await store.get("other") is True


@pytest.mark.asyncio
async def test_concurrent_edits_lose_no_update() -> None:
    """Fifty concurrent read-modify-write edits, each yielding mid-edit, all count."""
    store = InMemoryStateStore(AppState())

    async def bump() -> None:
        async with store.edit_state() as state:
            current = state.count
            await asyncio.sleep(0)
            state.count = current + 1

    await asyncio.gather(*(bump() for _ in range(50)))
    assert await store.get("count") == 50


# -- snapshots -----------------------------------------------------------------------------


def test_dict_state_snapshot_serializes_each_value() -> None:
    """to_dict of a DictState store writes each value with the serializer, under _data."""
    store = dict_store(n=1, p=Profile(name="a"))
    payload = store.to_dict(JsonSerializer())
    assert payload == {
        "store_type": "in_memory",
        "state_type": "DictState",
        "state_module": "stepstream.context.state_store",
        "state_data": {"_data": {"n": "1", "p": JsonSerializer().serialize(Profile(name="a"))}},
    }


def test_typed_state_snapshot_is_one_serialized_model() -> None:
    """to_dict of a typed store writes the model as one __is_pydantic JSON string."""
    payload = InMemoryStateStore(AppState(count=2)).to_dict(JsonSerializer())
    assert payload["store_type"] == "in_memory"
    assert payload["state_type"] == "AppState"
    assert payload["state_module"] == __name__
    data = json.loads(payload["state_data"])
    assert data["__is_pydantic"] is True
    assert data["qualified_name"] == f"{__name__}.AppState"
    assert data["value"]["count"] == 2


@pytest.mark.asyncio
async def test_snapshots_round_trip_through_from_dict() -> None:
    """from_dict(to_dict(...)) rebuilds an equal DictState or typed state."""
    s = JsonSerializer()
    dicts = InMemoryStateStore.from_dict(dict_store(a={"b": [1]}, p=Profile()).to_dict(s), s)
    assert await dicts.get("a.b.0") == 1
    assert await dicts.get("p") == Profile()
    typed = InMemoryStateStore.from_dict(InMemoryStateStore(MoreState(count=3)).to_dict(s), s)
    assert typed.state_type is MoreState
    assert await typed.get_state() == MoreState(count=3)


def test_from_dict_of_an_empty_payload_is_a_dict_state() -> None:
    """An empty payload gives a store with an empty DictState."""
    store = InMemoryStateStore.from_dict({}, JsonSerializer())
    assert store.state_type is DictState


def test_from_dict_without_store_type_is_in_memory() -> None:
    """A payload without store_type is read as an in-memory snapshot."""
    store = InMemoryStateStore.from_dict({"state_data": {"_data": {"k": "2"}}}, JsonSerializer())
    assert asyncio.run(store.get("k")) == 2


def test_from_dict_of_another_store_type_is_refused() -> None:
    """A payload of another store_type raises ValueError naming it."""
    with pytest.raises(ValueError, match="from store_type 'redis'"):
        InMemoryStateStore.from_dict({"store_type": "redis"}, JsonSerializer())


def test_from_dict_reads_classes_through_the_serializer_allowlist() -> None:
    """A typed snapshot is refused by a serializer whose allowed_types lacks its class."""
    payload = InMemoryStateStore(AppState()).to_dict(JsonSerializer())
    with pytest.raises(ValueError, match="is not in the serializer's allowed types"):
        InMemoryStateStore.from_dict(payload, JsonSerializer(allowed_types=[]))
    store = InMemoryStateStore.from_dict(payload, JsonSerializer(allowed_types=[AppState]))
    assert store.state_type is AppState


def test_unserializable_value_names_the_key() -> None:
    """A value the serializer cannot write raises ValueError naming its key."""
    expected = "^cannot serialize state key 'tags': cannot serialize a value of type set"
    with pytest.raises(ValueError, match=expected):
        dict_store(tags={"a"}).to_dict(JsonSerializer())


def test_known_unserializable_key_is_skipped_with_a_warning() -> None:
    """A 'memory' key that cannot be serialized is left out with UnserializableKeyWarning."""
    assert KNOWN_UNSERIALIZABLE_KEYS == ("memory",)
    store = dict_store(memory=threading.Lock(), n=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        payload = store.to_dict(JsonSerializer())
    assert payload["state_data"] == {"_data": {"n": "1"}}
    assert [w.category for w in caught] == [UnserializableKeyWarning]
    assert "state key 'memory' cannot be serialized" in str(caught[0].message)


@pytest.mark.asyncio
async def test_pickle_serializer_round_trips_arbitrary_values() -> None:
    """With PickleSerializer on both sides, values JSON cannot hold survive a snapshot."""
    s = PickleSerializer()
    store = InMemoryStateStore.from_dict(dict_store(tags={"a", "b"}, n=1).to_dict(s), s)
    assert await store.get("tags") == {"a", "b"}
    assert await store.get("n") == 1


# -- in a run ------------------------------------------------------------------------------


class Saved(Event):
    pass


class PathFlow(Workflow):
    """One step writes nested values by path, the next reads them back."""

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> Saved:
        await ctx.store.set("user.profile.name", "Ada")
        await ctx.store.set("scores", [3, 5])
        await ctx.store.set("scores.1", 8)
        return Saved()

    @step
    async def read(self, ctx: Context, ev: Saved) -> StopEvent:
        state = await ctx.store.get_state()
        return StopEvent(
            result={
                "name": await ctx.store.get("user.profile.name"),
                "second": await ctx.store.get("scores.1"),
                "missing": await ctx.store.get("user.email", default="-"),
                "keys": sorted(state.keys()),
                "type": ctx.store.state_type.__name__,
            }
        )


@pytest.mark.asyncio
async def test_steps_share_a_dict_state_written_by_path() -> None:
    """Without a typed state, steps share one DictState read and written by dot paths."""
    handler = PathFlow(timeout=5).run()
    assert await handler == {
        "name": "Ada",
        "second": 8,
        "missing": "-",
        "keys": ["scores", "user"],
        "type": "DictState",
    }
    assert await handler.ctx.store.get("user") == {"profile": {"name": "Ada"}}


class Base(BaseModel):
    count: int = 0


class Child(Base):
    seen: list[str] = Field(default_factory=list)


class Grandchild(Child):
    done: bool = False


class Next(Event):
    pass


class ChainFlow(Workflow):
    """Steps annotate the context with three models of one chain; all get the most derived."""

    @step
    async def first(self, ctx: Context[Base], ev: StartEvent) -> Next:
        state = await ctx.store.get_state()
        await ctx.store.set("count", state.count + 1)
        await ctx.store.set("seen", [type(state).__name__])
        return Next()

    @step
    async def second(self, ctx: Context[Grandchild], ev: Next) -> Saved:
        async with ctx.store.edit_state() as state:
            state.seen.append(type(state).__name__)
            state.count += 1
        return Saved()

    @step
    async def third(self, ctx: Context[Child], ev: Saved) -> StopEvent:
        await ctx.store.set("done", True)
        return StopEvent(result=await ctx.store.get_state())


@pytest.mark.asyncio
async def test_typed_state_across_a_subclass_chain_is_the_most_derived() -> None:
    """Context[Base], Context[Child] and Context[Grandchild] steps all share one Grandchild."""
    handler = ChainFlow(timeout=5).run()
    state = await handler
    assert isinstance(state, Grandchild)
    assert state == Grandchild(count=2, seen=["Grandchild", "Grandchild"], done=True)
    assert handler.ctx.store.state_type is Grandchild


class TypedWithPlain(Workflow):
    """One step declares a typed state; the others Context[Any] and Context[DictState]."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Next:
        await ctx.store.set("count", 41)
        return Next()

    @step
    async def middle(self, ctx: Context[DictState], ev: Next) -> Saved:
        return Saved()

    @step
    async def end(self, ctx: Context[Base], ev: Saved) -> StopEvent:
        return StopEvent(result=(await ctx.store.get("count")) + 1)


@pytest.mark.asyncio
async def test_plain_and_dict_state_contexts_do_not_count_as_state_types() -> None:
    """Context[Any] and Context[DictState] steps share the typed state the other step declares."""
    handler = TypedWithPlain(timeout=5).run()
    assert await handler == 42
    assert handler.ctx.store.state_type is Base


@pytest.mark.asyncio
async def test_each_run_starts_from_a_fresh_state() -> None:
    """A second run of one workflow starts from a new default state."""
    wf = ChainFlow(timeout=5)
    first = await wf.run()
    second = await wf.run()
    assert first == second


class StartsAsChild(Workflow):
    """Its start step has Context[Child]; subclasses add a step with another state type."""

    @step
    async def start(self, ctx: Context[Child], ev: StartEvent) -> Next:
        return Next()


def test_unrelated_state_types_are_a_validation_problem() -> None:
    """Steps whose state types are not one inheritance chain make the workflow invalid."""

    class Clash(StartsAsChild):
        @step
        async def end(self, ctx: Context[Unrelated], ev: Next) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError) as info:
        Clash()
    assert info.value.problems == (
        (
            "steps disagree on the Context state type (Child in start; Unrelated in end); the "
            "state types must form one inheritance chain (each a subclass of the next), whose "
            "most derived type is the state of every step: use one model, or derive one from "
            "the other"
        ),
    )


def test_siblings_of_one_base_are_not_a_chain() -> None:
    """Two subclasses of one base (neither derived from the other) are refused."""

    class Sibling(Base):
        other: int = 0

    class Siblings(StartsAsChild):
        @step
        async def end(self, ctx: Context[Sibling], ev: Next) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match="steps disagree on the Context state type"):
        Siblings()


def test_state_type_with_required_fields_is_a_validation_problem() -> None:
    """A state model that cannot be built without arguments makes the workflow invalid."""
    with pytest.raises(WorkflowValidationError) as info:
        NeedsArgs()
    assert info.value.problems == (
        (
            "the Context state type Required cannot be created without arguments: field(s) "
            "'name' have no default; give every field a default (each run starts from "
            "Required())"
        ),
    )
