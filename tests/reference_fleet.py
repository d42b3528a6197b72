"""The reference pipeline as processes, for the chaos tests: one ``readmodel relay``, two
``readmodel work`` and one ``readmodel simulate``, SIGKILLed and restarted on demand, then
drained and checked by ``readmodel verify``."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from tests.broker_helpers import Processes
from tests.cli_helpers import run_cli
from tests.reference_helpers import pipeline_caught_up

WORK_ARGS = ("-p", "1", "-t", "4")


class ReferenceFleet:
    def __init__(self, processes: Processes, config: Path, rng: random.Random) -> None:
        self.processes = processes
        self.config = config
        self.rng = rng
        self.kills = {"relay": 0, "worker": 0}
        self._work = ("work", "--config", str(config), *WORK_ARGS)
        self.relay = ""
        self.workers: list[str] = []
        self.simulate = ""

    def start(self, users: int, orders: int, *simulate_args: str) -> None:
        """Migrate, create the reference services, then start the relay, two workers and
        the simulation of ``users`` and ``orders``."""
        for command in (["migrate"], ["reference", "init"]):
            result = run_cli([*command, "--config", str(self.config)])
            assert result.exit_code == 0, result.output
        self.relay = self._start_relay()
        self.workers = [self.processes.start("worker", *self._work) for _ in range(2)]
        self.simulate = self.processes.start(
            "simulate",
            *("simulate", "--config", str(self.config)),
            *("--users", str(users), "--orders", str(orders), *simulate_args),
        )

    @property
    def simulator_running(self) -> bool:
        return self.processes.running[self.simulate].poll() is None

    def assert_none_died(self) -> None:
        """No process but the simulation has exited on its own."""
        running = self.processes.running
        dead = {k: p.returncode for k, p in running.items() if p.poll() is not None}
        dead.pop(self.simulate, None)
        assert not dead, f"exited on their own: {dead}\n" + self.processes.log_tail()

    def kill_relay(self) -> None:
        self.processes.kill(self.relay)
        self.relay = self._start_relay()
        self.kills["relay"] += 1

    def kill_a_worker(self) -> bool:
        """SIGKILL a worker that has started (a SIGTERM-free death, not one while it imports)
        and start another; False when none has started yet."""
        booted = [key for key in self.workers if self.processes.worker_started(key)]
        if not booted:
            return False
        victim = self.rng.choice(booted)
        self.processes.kill(victim)
        self.workers.remove(victim)
        self.workers.append(self.processes.start("worker", *self._work))
        self.kills["worker"] += 1
        return True

    def finish(self, simulation_timeout: float, catch_up_deadline: float) -> dict[str, Any]:
        """Wait for the simulation and for the pipeline to catch up, stop every process
        cleanly (exit code 0), and return ``readmodel verify --json``'s report, found ok."""
        processes = self.processes
        simulator = processes.running[self.simulate]
        assert simulator.wait(timeout=simulation_timeout) == 0, processes.log_tail()
        processes.running.pop(self.simulate)
        deadline = time.monotonic() + catch_up_deadline
        while not pipeline_caught_up(self.config):
            assert time.monotonic() < deadline, "not caught up\n" + processes.log_tail()
            time.sleep(1)
        while not all(processes.worker_started(key) for key in self.workers):
            time.sleep(0.2)  # a SIGTERM while a worker imports is a death, not a stop
        codes = processes.stop_all()
        assert set(codes.values()) == {0}, f"exit codes {codes}\n" + processes.log_tail()
        result = run_cli(["verify", "--config", str(self.config), "--json"])
        assert result.exit_code == 0, result.output
        report: dict[str, Any] = json.loads(result.stdout)
        assert report["ok"] is True and report["behind"] == ""
        return report

    def _start_relay(self) -> str:
        return self.processes.start("relay", "relay", "--config", str(self.config))
