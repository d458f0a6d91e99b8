"""Where an interrupted ``synth`` build resumes: after the last step it finished.

A build at 10^8 synapses takes about half an hour and at 3.4×10^8 hours; a Ctrl-C, a crash
or a machine going away should cost the step it was in, not the hours before. After each step
the build records its name here with a copy of the live store as the step left it (the
store is small: tens of MB at 10^8) and the values later steps need. Resuming puts that copy
back — which undoes whatever the interrupted step had written to the store, such as half its
edits — and removes the files the unfinished steps may have left, so they run again from
their start. Every step is deterministic, so a resumed build equals an uninterrupted one.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..storage.files import DataDir, atomic_path

#: Bump when steps change what they leave behind: an older checkpoint then starts over.
FORMAT = 3


@dataclass
class Checkpoint:
    out: Path
    synapses: int
    seed: int
    done: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False

    @property
    def directory(self) -> Path:
        return self.out / ".synth-checkpoint"

    @classmethod
    def start(cls, out: Path, synapses: int, seed: int) -> Checkpoint:
        checkpoint = cls(Path(out), synapses, seed)
        checkpoint.directory.mkdir(parents=True)
        checkpoint._save()
        return checkpoint

    @classmethod
    def resume(cls, out: Path, synapses: int, seed: int) -> Checkpoint | None:
        """The checkpoint of an interrupted build of the same size and seed, its live store
        put back; None when there is none to resume."""
        state_file = Path(out) / ".synth-checkpoint" / "state.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return None
        if (state.get("format"), state.get("synapses"), state.get("seed")) != (
                FORMAT, synapses, seed):
            return None
        checkpoint = cls(Path(out), synapses, seed, list(state["done"]), state["values"],
                         resumed=True)
        checkpoint._restore_live()
        return checkpoint

    def finished(self, step: str) -> bool:
        return step in self.done

    @property
    def last(self) -> str | None:
        return self.done[-1] if self.done else None

    def finish(self, step: str, **values: Any) -> None:
        """Record ``step`` as done, with the live store as it is now and ``values`` (JSON).
        The state file is the one commit point: until it is replaced, the step is not done
        and the previous copy of the store is the one a resume puts back."""
        previous = self._live_copy(len(self.done))
        with atomic_path(self._live_copy(len(self.done) + 1)) as tmp:
            source = sqlite3.connect(DataDir(self.out).live_store)
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)  # a consistent copy, whatever the store's journal
            finally:
                target.close()
                source.close()
        self.done.append(step)
        self.values.update(values)
        self._save()
        previous.unlink(missing_ok=True)

    def keep(self, name: str, value: Any) -> None:
        """Keep a value that is not JSON (NumPy arrays, dataclasses) for later steps."""
        with atomic_path(self.directory / f"{name}.pickle") as tmp:
            tmp.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def kept(self, name: str) -> Any:
        """A value :meth:`keep` wrote (this build's own file, never outside input)."""
        return pickle.loads((self.directory / f"{name}.pickle").read_bytes())

    def remove(self) -> None:
        shutil.rmtree(self.directory)

    def _live_copy(self, steps_done: int) -> Path:
        """The copy of the live store as the first ``steps_done`` steps left it."""
        return self.directory / f"live-{steps_done}.sqlite"

    def _restore_live(self) -> None:
        live = DataDir(self.out).live_store
        for suffix in ("-wal", "-shm", "-journal"):  # a killed writer's journal must not replay
            live.with_name(live.name + suffix).unlink(missing_ok=True)
        if self.done:
            shutil.copyfile(self._live_copy(len(self.done)), live)
        else:  # nothing finished yet: the build starts a new store
            live.unlink(missing_ok=True)

    def _save(self) -> None:
        state = {"format": FORMAT, "synapses": self.synapses, "seed": self.seed,
                 "done": self.done, "values": self.values}
        with atomic_path(self.directory / "state.json") as tmp:
            tmp.write_text(json.dumps(state, indent=1))
