"""Per-slot plumbing on a server client (a fake): one command for the whole batch."""

from __future__ import annotations

from typing import Any

from services.redisconn.slots import SlotScript, by_slot, mget


class FakeServer:
    """Stands for redis.Redis: records the calls; no network."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def mget(self, keys: list[str]) -> list[bytes | None]:
        self.calls.append(("mget", list(keys)))
        return [k.encode() if k != "missing" else None for k in keys]

    def register_script(self, text: str) -> Any:
        def run(keys: list[str], args: list[Any]) -> list[Any]:
            self.calls.append(("script", (list(keys), list(args))))
            return [len(k) for k in keys]

        return run


def test_keys_that_share_a_hash_tag_share_a_slot() -> None:
    groups = by_slot(["{user}:1", "{user}:2", "item:1"])
    assert sorted(len(g) for g in groups.values()) == [1, 2]


def test_on_a_server_a_batch_is_one_mget_and_one_script_call() -> None:
    fake = FakeServer()
    assert mget(fake, ["a", "missing", "bb"]) == [b"a", None, b"bb"]  # type: ignore[arg-type]  # a fake
    assert mget(fake, []) == []  # type: ignore[arg-type]  # a fake
    script = SlotScript(fake, "return 1")  # type: ignore[arg-type]  # a fake
    assert script(["a", "bb"], [7], [1, 2]) == [1, 2]
    assert fake.calls == [("mget", ["a", "missing", "bb"]), ("script", (["a", "bb"], [7, 1, 2]))]
