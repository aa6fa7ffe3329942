"""The rehearsal's engine model without Docker: diff rules, order, parallelism, replacements."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pulumi
import pytest
from pulumi_command import remote

from config import PROJECT
from tests.sdk.rehearsal import Engine
from tests.sdk.rehearsal_providers import NotApplied, Overrides, RemoteCommand, provider_map
from tests.sdk.rehearsal_state import CREATE, REPLACE, SAME, UPDATE, State, command_diff
from tests.sdk.wire import UNKNOWN, plain
from tools.synth import stack_file_config

CONN = {"host": "192.0.2.10", "user": "root", "privateKey": "k", "port": 22.0}


# -- the Command diff (pulumi-go-provider default diff + replaceOnChanges triggers[*]) ------------


def test_unchanged_inputs_are_same_even_when_numbers_come_back_as_doubles() -> None:
    olds = {"create": "x", "connection": {**CONN, "port": 22}, "triggers": ["a"]}
    assert command_diff(olds, {**olds, "connection": {**CONN, "port": 22.0}}) == SAME


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"create": "y"}, UPDATE),
        ({"stdin": "new"}, UPDATE),
        ({"logging": "none"}, UPDATE),
        ({"connection": {**CONN, "hostKey": "ssh-ed25519 AAAA"}}, UPDATE),
        ({"triggers": ["b"]}, REPLACE),
        ({"triggers": ["a", "c"]}, REPLACE),  # an added element is a change under triggers[*]
        ({"triggers": [UNKNOWN]}, REPLACE),  # unknown in a preview: it will change
        ({"__provider": "other"}, SAME),  # internal keys are not diffed
    ],
)
def test_what_a_command_input_change_does(change: dict[str, Any], expected: str) -> None:
    olds = {"create": "x", "stdin": "old", "connection": CONN, "triggers": ["a"]}
    assert command_diff(olds, {**olds, **change}) == expected


def test_adding_the_whole_triggers_list_is_an_update() -> None:
    # triggers[*] contains triggers[0] but not the path `triggers` itself (PropertyPath.Contains)
    assert command_diff({"create": "x"}, {"create": "x", "triggers": ["a"]}) == UPDATE


def test_plain_unwraps_secrets_and_output_values() -> None:
    sig, secret = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"
    wire = {
        "a": {sig: secret, "value": {"b": [1.0, {sig: secret, "value": "s"}]}},
        "o": {sig: "d0e6a833031e9bbcd3f4e8bde6ca49a4", "dependencies": []},
    }
    assert plain(wire) == {"a": {"b": [1.0, "s"]}, "o": UNKNOWN}


# -- the engine model on a small program ----------------------------------------------------------


class FakeHost:
    """A command runner that takes `delay` seconds per command and records when each ran."""

    def __init__(self, delay: float = 0.15) -> None:
        self.delay = delay
        self.ran: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def __call__(
        self, connection: dict[str, Any], command: str, stdin: str | None
    ) -> tuple[int, str, str]:
        start = time.perf_counter()
        time.sleep(self.delay)
        with self.lock:
            self.ran.append((command, start, time.perf_counter()))
        return 0, f"out of {command}\n", ""

    def names(self) -> list[str]:
        return [c for c, _, _ in self.ran]

    def window(self, command: str) -> tuple[float, float]:
        (found,) = [(s, e) for c, s, e in self.ran if c == command]
        return found


def program(chains: int = 2, length: int = 3, fan: int = 0) -> None:
    """guest -> ready -> `chains` independent chains of `length` commands (each trigger is the
    previous command's ID, like the baseline steps), plus `fan` independent commands."""
    config = pulumi.Config(PROJECT)
    guest = pulumi.CustomResource("test:index:Guest", "guest", {"vmId": 104})
    conn = remote.ConnectionArgs(host="192.0.2.10", private_key=pulumi.Output.secret("k"))
    ready = remote.Command(
        "ready",
        connection=conn,
        create="ready",
        triggers=[guest.id],
        opts=pulumi.ResourceOptions(deleted_with=guest),
    )
    for c in range(chains):
        previous: remote.Command = ready
        for i in range(length):
            previous = remote.Command(
                f"c{c}-{i}",
                connection=conn,
                create=f"c{c}-{i}",
                stdin=config.get(f"stdin-c{c}-{i}") or "",
                triggers=[previous.id],
                opts=pulumi.ResourceOptions(depends_on=[ready], deleted_with=guest),
            )
    for f in range(fan):
        remote.Command(f"fan-{f}", connection=conn, create=f"fan-{f}", triggers=[ready.id])


def config(**stdin: str) -> tuple[dict[str, str], set[str]]:
    return {f"{PROJECT}:stdin-{k.replace('_', '-')}": v for k, v in stdin.items()}, set()


def engine(host: FakeHost, state: State, parallel: int = 8) -> Engine:
    guest = NotApplied("a test guest")
    overrides = Overrides(by_type_prefix={"test:index:Guest": guest})
    return Engine(provider_map(RemoteCommand(host), None, overrides), state, parallel)


def test_first_up_creates_in_dependency_order_and_runs_independent_chains_in_parallel() -> None:
    host, state = FakeHost(), State()
    run = engine(host, state).up(program, config())
    assert run.violations == []
    assert set(run.ops().values()) == {CREATE}
    assert host.names()[0] == "ready"
    for c in range(2):
        ends = [host.window(f"c{c}-{i}") for i in range(3)]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends)), "chain order"
    # the two chains overlap in time: each step of one runs while the other's runs
    a, b = host.window("c0-1"), host.window("c1-1")
    assert a[0] < b[1] and b[0] < a[1]
    assert run.max_concurrent >= 2
    # 7 commands of 0.15 s: sequential would take >= 1.05 s, the two chains take ~0.6 s
    assert run.commands == 7


def test_parallelism_bounds_concurrent_steps() -> None:
    host = FakeHost(0.1)
    run = engine(host, State(), parallel=2).up(lambda: program(0, 0, fan=6), config())
    assert run.max_concurrent == 2
    assert run.commands == 7


def test_a_second_up_with_nothing_changed_runs_nothing() -> None:
    host, state = FakeHost(), State()
    eng = engine(host, state)
    eng.up(program, config())
    host.ran.clear()
    run = eng.up(program, config())
    assert run.commands == 0 and host.ran == []
    assert run.ops() == {}


def test_a_changed_stdin_updates_that_command_only_and_the_preview_says_so() -> None:
    host, state = FakeHost(), State()
    eng = engine(host, state)
    eng.up(program, config())
    host.ran.clear()
    preview = eng.up(program, config(c0_1="new"), preview=True)
    assert host.ran == []
    assert preview.ops() == {"c0-1": UPDATE}
    run = eng.up(program, config(c0_1="new"))
    assert run.ops() == preview.ops()
    assert host.names() == ["c0-1"]  # an update keeps the ID: c0-2's trigger is unchanged


def test_a_replaced_command_gets_a_new_id_so_every_command_triggered_by_it_is_replaced() -> None:
    host, state = FakeHost(), State()
    eng = engine(host, state)
    eng.up(program, config())
    host.ran.clear()
    ready = next(u for u in state.resources if u.endswith("::ready"))
    preview = eng.up(program, config(), preview=True, replace=(ready,))
    run = eng.up(program, config(), replace=(ready,))
    assert run.ops() == preview.ops()
    assert run.ops() == {
        "ready": REPLACE,
        **{f"c{c}-{i}": REPLACE for c in (0, 1) for i in (0, 1, 2)},
    }


def test_a_replaced_guest_replaces_everything_deleted_with_it() -> None:
    """step_generator.go: 'marked for replacement because ... (its DeletedWith resource) is
    being replaced' — even though the guest's ID (its VMID) does not change."""
    host, state = FakeHost(), State()
    eng = engine(host, state)
    eng.up(lambda: program(fan=1), config())
    host.ran.clear()
    guest = next(u for u in state.resources if u.endswith("::guest"))
    run = eng.up(lambda: program(fan=1), config(), replace=(guest,))
    ops = run.ops()
    assert ops["guest"] == REPLACE and ops["ready"] == REPLACE
    assert "deletedWith" in run.by_name("ready").reason
    # fan-0 is not deleted with the guest, but its trigger (ready's new ID) replaces it
    assert ops["fan-0"] == REPLACE and "triggers" in run.by_name("fan-0").reason


def test_without_deleted_with_a_replaced_guest_with_the_same_id_replaces_nothing() -> None:
    host, state = FakeHost(), State()

    def no_deleted_with() -> None:
        guest = pulumi.CustomResource("test:index:Guest", "guest", {"vmId": 104})
        remote.Command(
            "ready", connection=remote.ConnectionArgs(host="h"), create="r", triggers=[guest.id]
        )

    eng = engine(host, state)
    eng.up(no_deleted_with, config())
    host.ran.clear()
    guest = next(u for u in state.resources if u.endswith("::guest"))
    run = eng.up(no_deleted_with, config(), replace=(guest,))
    assert run.ops() == {"guest": REPLACE}
    assert host.ran == []


def test_a_failed_step_stops_the_run_and_keeps_the_previous_state() -> None:
    class Failing(FakeHost):
        def __call__(self, connection: Any, command: str, stdin: str | None) -> Any:
            super().__call__(connection, command, stdin)
            return (1, "", "boom") if command == "c0-1" else (0, "ok", "")

    host, state = Failing(0.01), State()
    with pytest.raises(Exception, match="boom"):
        engine(host, state).up(program, config())
    assert not any(u.endswith("::c0-1") or u.endswith("::c0-2") for u in state.resources)
    assert "c0-2" not in host.names()


def test_the_dev_stack_preview_from_empty_state_creates_everything_and_runs_nothing() -> None:
    from stacks.platform import build, load_stack_config

    host = FakeHost(0)
    eng = Engine(provider_map(RemoteCommand(host), NotApplied("dynamic"), Overrides()), State())
    run = eng.up(lambda: build(load_stack_config()), stack_file_config("dev"), preview=True)
    assert host.ran == []
    assert run.violations == []
    assert set(run.ops().values()) == {CREATE}
    assert len(run.steps) > 50


def test_run_knows_the_dependency_order_of_its_steps() -> None:
    run = engine(FakeHost(0), State()).up(program, config())
    assert run.depends("c0-2", "ready") and run.depends("c0-2", "c0-0")
    assert not run.depends("c0-2", "c1-0") and not run.depends("ready", "c0-0")


def with_deletes(dbr: bool, guest_dbr: bool = False) -> Callable[[], None]:
    """guest -> ready -> a (delete: "undo a") -> b, everything deleted with the guest."""

    def build() -> None:
        guest = pulumi.CustomResource(
            "test:index:Guest",
            "guest",
            {"vmId": 104},
            opts=pulumi.ResourceOptions(delete_before_replace=guest_dbr),
        )
        conn = remote.ConnectionArgs(host="192.0.2.10")
        opts = pulumi.ResourceOptions(deleted_with=guest)
        ready = remote.Command("ready", connection=conn, create="ready", opts=opts)
        a = remote.Command(
            "a",
            connection=conn,
            create="a",
            delete="undo a",
            triggers=[ready.id],
            opts=pulumi.ResourceOptions(deleted_with=guest, delete_before_replace=dbr),
        )
        remote.Command("b", connection=conn, create="b", triggers=[a.id], opts=opts)

    return build


@pytest.mark.parametrize("dbr", [False, True])
def test_a_replaced_command_runs_its_old_delete_create_before_delete_at_the_end(
    dbr: bool,
) -> None:
    host, state = FakeHost(0.01), State()
    eng = engine(host, state)
    eng.up(with_deletes(dbr), config())
    host.ran.clear()
    run = eng.up(
        with_deletes(dbr),
        config(),
        replace=(next(u for u in state.resources if u.endswith("::ready")),),
    )
    assert run.ops() == {"ready": REPLACE, "a": REPLACE, "b": REPLACE}
    if dbr:  # delete, then create; b after a as before
        assert host.names() == ["ready", "undo a", "a", "b"]
    else:  # step_generator: the old copy is deleted after every registration ("delete-replaced")
        assert host.names() == ["ready", "a", "b", "undo a"]


def test_the_old_copies_of_what_is_deleted_with_a_deleted_guest_are_not_deleted() -> None:
    """step.go DeleteStep.Apply: isDeletedWith(old.DeletedWith, otherDeletions) -> no Delete."""
    host, state = FakeHost(0.01), State()
    eng = engine(host, state)
    build = with_deletes(dbr=False, guest_dbr=True)
    eng.up(build, config())
    host.ran.clear()
    guest = next(u for u in state.resources if u.endswith("::guest"))
    run = eng.up(build, config(), replace=(guest,))
    assert run.ops() == {"guest": REPLACE, "ready": REPLACE, "a": REPLACE, "b": REPLACE}
    assert host.names() == ["ready", "a", "b"]  # no "undo a": it went with the old guest
    assert "not deleted" in run.by_name("a").reason
