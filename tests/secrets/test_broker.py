"""The broker and its leases, with backends that are plain functions: all or nothing,
values only in memory, wiped by hand, by time (on a clock we move) or by a timer."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle

import pytest
from whenever import TimeDelta

from episteme.errors import InvalidInput, NotFound
from episteme.secrets import Broker, FunctionBackend, LeaseClosed, NotLeased, Registry
from episteme.secrets.store import BUILTIN, Backends, SecretBackend, SecretStoreError, Unconfigured
from episteme.timeutil import ManualClock
from tests.secrets.conftest import CANARY

pytestmark = pytest.mark.anyio

VALUES = {"mem://db/password": CANARY, "mem://db/user": "app", "mem://k8s/token": "t0k3n"}


class Recorder:
    """A secret store as a plain function that remembers what it was asked."""

    def __init__(self, values: dict[str, str] = VALUES) -> None:
        self.values, self.asked = values, list[str]()

    def __call__(self, ref: str) -> str:
        self.asked.append(ref)
        if ref not in self.values:
            raise NotFound(f"no secret {ref}")
        return self.values[ref]


def make(clock: ManualClock, store: Recorder | None = None) -> tuple[Broker, Recorder]:
    recorder = store or Recorder()
    return Broker({"mem": FunctionBackend(recorder)}, clock=clock), recorder


async def test_a_lease_holds_the_values_of_its_references(clock: ManualClock) -> None:
    broker, store = make(clock)
    refs = ["mem://db/password", "mem://db/user", "mem://db/password"]
    lease = await broker.lease(refs, ttl_s=900)
    assert lease.refs == ("mem://db/password", "mem://db/user")
    assert store.asked == ["mem://db/password", "mem://db/user"]  # each fetched once
    assert lease.get("mem://db/password") == CANARY
    assert lease.get("mem://db/user") == "app"
    assert "mem://db/user" in lease
    assert len(lease) == 2
    assert lease.expires_at == clock.now().add(TimeDelta(seconds=900))
    assert lease.live
    assert not lease.wiped
    lease.wipe()


async def test_wipe_drops_the_values_and_is_idempotent(clock: ManualClock) -> None:
    broker, _ = make(clock)
    lease = await broker.lease(["mem://db/password"], ttl_s=60)
    lease.wipe()
    lease.wipe()
    assert lease.wiped
    assert not lease.live
    assert lease.refs == ("mem://db/password",)  # references stay: they are not secret
    with pytest.raises(LeaseClosed, match=r"closed \(it was wiped\)"):
        lease.get("mem://db/password")
    with await broker.lease(["mem://db/user"], ttl_s=60) as held:  # leaving the block wipes
        assert held.get("mem://db/user") == "app"
    assert held.wiped


async def test_a_lease_expires_on_the_brokers_clock(clock: ManualClock) -> None:
    broker, _ = make(clock)
    lease = await broker.lease(["mem://db/password"], ttl_s=60)
    clock.advance(TimeDelta(seconds=59))
    assert lease.get("mem://db/password") == CANARY
    clock.advance(TimeDelta(seconds=1))
    assert not lease.live
    with pytest.raises(LeaseClosed, match=r"it expired at 2026-11-21T09:01:00Z"):
        lease.get("mem://db/password")
    assert lease.wiped
    clock.advance(TimeDelta(seconds=-30))  # a clock that goes back does not bring it back
    with pytest.raises(LeaseClosed):
        lease.get("mem://db/password")


async def test_a_lease_is_wiped_when_its_time_is_up_even_if_nobody_asks() -> None:
    broker, _ = make(ManualClock())  # a clock that never moves: only the timer can end it
    lease = await broker.lease(["mem://db/password"], ttl_s=0.05)
    await asyncio.sleep(0.15)
    assert lease.wiped
    with pytest.raises(LeaseClosed, match="its time was up"):
        lease.get("mem://db/password")


async def test_asking_for_what_was_not_leased(clock: ManualClock) -> None:
    broker, _ = make(clock)
    lease = await broker.lease(["mem://db/user"], ttl_s=60)
    with pytest.raises(
        NotLeased, match=r"mem://k8s/token is not in this lease, which holds mem://db/user"
    ):
        lease.get("mem://k8s/token")
    with pytest.raises(NotLeased) as caught:
        lease.get(CANARY)  # a value passed where a reference belongs is not echoed
    assert CANARY not in caught.value.message
    assert caught.value.status == 403


async def test_one_failing_reference_fails_the_lease_and_names_it(clock: ManualClock) -> None:
    broker, store = make(clock)
    refs = ["mem://db/password", "mem://missing/thing", "mem://k8s/token"]
    with pytest.raises(NotFound) as caught:
        await broker.lease(refs, ttl_s=60)
    assert caught.value.message == "no secret mem://missing/thing"
    assert store.asked == refs[:2]  # it stops at the first failure


async def test_a_backends_message_is_prefixed_with_the_reference(clock: ManualClock) -> None:
    def vague(ref: str) -> str:
        raise SecretStoreError("the store is sulking")

    broker = Broker({"mem": FunctionBackend(vague)}, clock=clock)
    with pytest.raises(SecretStoreError, match=r"^mem://a/b: the store is sulking$"):
        await broker.lease(["mem://a/b"], ttl_s=60)


async def test_a_backends_own_exception_is_named_not_quoted(clock: ManualClock) -> None:
    def leaky(ref: str) -> str:
        raise RuntimeError(f"connection string postgres://app:{CANARY}@db")

    async def not_text(ref: str) -> str:
        return 42  # type: ignore[return-value]

    for backend in (FunctionBackend(leaky), FunctionBackend(not_text)):
        broker = Broker({"mem": backend}, clock=clock)
        with pytest.raises(SecretStoreError) as caught:
            await broker.lease(["mem://a/b"], ttl_s=60)
        assert caught.value.message.startswith("mem://a/b: the secret store ")
        assert CANARY not in str(caught.value)


async def test_every_scheme_is_checked_before_anything_is_fetched(clock: ManualClock) -> None:
    broker, store = make(clock)
    with pytest.raises(
        InvalidInput, match=r"no secret store handles op:// references \(configured: mem://\)"
    ):
        await broker.lease(["mem://db/user", "op://a/b/c"], ttl_s=60)
    with pytest.raises(InvalidInput, match="is not shown"):
        await broker.lease(["mem://db/user", CANARY], ttl_s=60)
    assert store.asked == []


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_a_lease_needs_a_positive_ttl(clock: ManualClock, ttl: float) -> None:
    broker, store = make(clock)
    with pytest.raises(InvalidInput, match="positive ttl_s"):
        await broker.lease(["mem://db/user"], ttl_s=ttl)
    assert store.asked == []


async def test_a_lease_shows_references_never_values(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="episteme")
    broker, _ = make(clock)
    lease = await broker.lease(list(VALUES), ttl_s=60)
    shown = [repr(lease), str(lease), f"{lease}", repr(broker)]
    assert "mem://db/password" in shown[0]
    assert "expires 2026-11-21T09:01:00Z, live" in shown[0]
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            attempt(lease)
    assert not hasattr(lease, "__dict__")
    lease.wipe()
    shown += [repr(lease)]
    shown += [r.getMessage() for r in caplog.records]
    assert any("fetched mem://db/password" in s for s in shown)
    assert not [s for s in shown if CANARY in s or "t0k3n" in s]


async def test_an_empty_lease(clock: ManualClock) -> None:
    broker, _ = make(clock)
    lease = await broker.lease([], ttl_s=60)
    assert lease.refs == ()
    with pytest.raises(NotLeased, match="which holds -"):
        lease.get("mem://db/user")


async def test_async_function_backends(clock: ManualClock) -> None:
    async def store(ref: str) -> str:
        await asyncio.sleep(0)
        return ref.upper()

    lease = await Broker({"mem": FunctionBackend(store)}, clock=clock).lease(["mem://x"], 60)
    assert lease.get("mem://x") == "MEM://X"


async def test_the_registry_builds_backends_when_first_used(clock: ManualClock) -> None:
    built: list[str] = []

    def from_env(environ: object) -> SecretBackend:
        built.append("mem")
        return FunctionBackend(lambda ref: f"value of {ref}")

    registry = Registry.default()
    assert set(BUILTIN) <= set(registry.schemes) == set(BUILTIN)
    registry.add("MEM", from_env)
    broker = Broker.from_env({}, clock=clock, registry=registry)
    assert isinstance(broker.backends, Backends)
    assert sorted(broker.backends) == ["env", "file", "mem", "op", "vault"]
    assert built == []
    lease = await broker.lease(["MEM://db/user", "mem://db/password"], ttl_s=60)
    assert lease.get("MEM://db/user") == "value of MEM://db/user"
    assert built == ["mem"]  # once, and only when needed
    assert isinstance(broker.backends["op"], Unconfigured)  # nothing set: it says what to set
    with pytest.raises(KeyError):
        broker.backends["nope"]
    with pytest.raises(InvalidInput, match="use one of env://, file://, mem://, op://, vault://"):
        registry.factory("nope")
    by_name = Registry({"env": "episteme.secrets.env:env_from_env"})
    env = await Broker(Backends(by_name, {"X": "y"}), clock=clock).lease(["env://X"], 60)
    assert env.get("env://X") == "y"
