"""Relays under test: ``readmodel relay`` processes started, killed and stopped by pid
(:class:`RelayFleet`), a :class:`~outbox.relay.Relay` running in a thread (:func:`running`),
and :func:`wait_for` a condition."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outbox.relay import Relay

READMODEL = Path(sys.executable).with_name("readmodel")
STOP_TIMEOUT = 15.0  # a relay must exit this soon after SIGTERM


@dataclass
class RelayProcess:
    number: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def has_led(self) -> bool:
        return "leading source" in self.log_text()

    def took_over(self) -> bool:
        """Led after standing by: a hot standby that took over from a killed leader."""
        text = self.log_text()
        return 0 <= text.find("standing by") < text.find("leading source")

    def is_up(self) -> bool:
        """Started: leading, or standing by (logged at debug level every standby retry)."""
        text = self.log_text()
        return "leading source" in text or "standing by" in text


@dataclass
class RelayFleet:
    """The relay processes of one test: started, killed and stopped by pid, never by name."""

    config: Path
    directory: Path
    alive: list[RelayProcess] = field(default_factory=list)
    gone: list[RelayProcess] = field(default_factory=list)
    kills: int = 0
    leader_kills: int = 0

    def start(self) -> RelayProcess:
        number = len(self.alive) + len(self.gone) + 1
        log_path = self.directory / f"relay-{number:02d}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [str(READMODEL), "relay", "--config", str(self.config)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        relay = RelayProcess(number, process, log_path)
        self.alive.append(relay)
        self._note(f"started relay {number} (pid {process.pid})")
        return relay

    def _note(self, what: str) -> None:
        """Keep a timeline (UTC, like the relays' logs) in chaos.log, to read after a failure."""
        with open(self.directory / "chaos.log", "a", encoding="utf-8") as timeline:
            timeline.write(f"{datetime.now(UTC).isoformat()} {what}\n")

    def leader(self) -> RelayProcess | None:
        """The live relay that has logged taking the lead (relays lead until they die)."""
        leaders = [r for r in self.alive if r.has_led()]
        return leaders[-1] if leaders else None

    def kill(self, relay: RelayProcess, *, was_leader: bool) -> None:
        relay.process.send_signal(signal.SIGKILL)
        relay.process.wait()
        self._note(f"killed relay {relay.number}{' (the leader)' if was_leader else ''}")
        self.alive.remove(relay)
        self.gone.append(relay)
        self.kills += 1
        self.leader_kills += was_leader

    def check_alive(self) -> None:
        """Fail if a relay exited without being killed (it crashed on its own)."""
        for relay in self.alive:
            code = relay.process.poll()
            if code is not None:
                pytest.fail(
                    f"relay {relay.number} exited by itself with status {code}:\n"
                    + _tail(relay.log_text())
                )

    def wait_for_leader(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.leader() is None:
            self.check_alive()
            assert time.monotonic() < deadline, f"no relay took the lead:\n{self.logs()}"
            time.sleep(0.1)

    def stop(self) -> dict[int, int | None]:
        """SIGTERM every relay that is up (SIGKILL those still starting, which may not handle
        SIGTERM yet); returns each SIGTERMed relay's exit status (None: had to be killed)."""
        up = [relay for relay in self.alive if relay.is_up()]
        for relay in self.alive:
            relay.process.send_signal(signal.SIGTERM if relay in up else signal.SIGKILL)
        statuses: dict[int, int | None] = {}
        deadline = time.monotonic() + STOP_TIMEOUT
        for relay in list(self.alive):
            try:
                code = relay.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                relay.process.kill()
                relay.process.wait()
                code = None
            if relay in up:
                statuses[relay.number] = code
            self.alive.remove(relay)
            self.gone.append(relay)
        self._note(f"stopped relays {sorted(statuses)}: {statuses}")
        return statuses

    def kill_all(self) -> None:
        for relay in list(self.alive):
            if relay.process.poll() is None:
                relay.process.kill()
            relay.process.wait()
            self.alive.remove(relay)
            self.gone.append(relay)

    def takeovers(self) -> int:
        return sum(relay.took_over() for relay in self.alive + self.gone)

    def logs(self) -> str:
        return "\n".join(
            f"--- relay {r.number} ---\n{_tail(r.log_text())}"
            for r in sorted(self.gone + self.alive, key=lambda r: r.number)
        )


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds and return how long that took; fail after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - start


@contextmanager
def running(relay: Relay) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name="relay-under-test")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the relay did not stop"
