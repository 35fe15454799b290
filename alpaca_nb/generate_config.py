"""Lesson 02's settings and state on disk: :class:`GenerateConfig`, the output folder's files, the prompts.

Shared by the generation loop (:mod:`alpaca_nb.generate`), its request layer
(:mod:`alpaca_nb.generate_requests`) and its estimates (:mod:`alpaca_nb.generate_cost`).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import prompts
from .errors import AlpacaNbError
from .fileio import ensure_dir, read_json
from .paths import outputs_dir

STAGE = "02_generate_instructions"
REGEN_FILE, SUMMARY_FILE, SERVER_LOG = "regen.json", "summary.json", "server.log"
# Alpaca's one-prompt shortcut, or Self-Instruct's four steps (alpaca_nb.self_instruct), which by default write
# to a subfolder of the stage's folder.
RECIPES = ("alpaca", "self-instruct")
SELF_INSTRUCT_SUBDIR = "self_instruct"

# Alpaca's request settings: up to 3072 new tokens, stop before task 20. The embedded 135M model on a
# CPU writes a few tokens a second and rarely finishes a task list, so locally each request stops
# after its first task (at "###" or where the next task begins): short requests, at most one task each.
REMOTE_MAX_TOKENS, LOCAL_MAX_TOKENS = 3072, 160
REMOTE_STOP = ["\n20", "20."]


@dataclass
class GenerateConfig:
    """Everything a generation run needs; the command line and the notebook fill the same fields.

    ``api=None`` means ``"chat"`` for ``backend="openai"`` (current OpenAI models are chat models) and
    ``"completions"`` otherwise (Alpaca's style). ``request_batch_size`` prompts go in one legacy
    completions request where the server takes a list (OpenAI, vLLM); the chat API and the local
    ``transformers serve`` take one prompt per request. ``max_concurrency=None`` means 1 for the
    local server (it generates one request at a time) and 8 otherwise; fewer go out when the target
    needs fewer. ``max_requests`` bounds the total number of requests over all resumed runs (a weak
    teacher may never reach the target); ``None`` means 3x the estimated number
    (:func:`alpaca_nb.generate_cost.estimate`). :meth:`validate` checks the numbers before anything is sent.

    ``recipe="self-instruct"`` runs Self-Instruct's four steps instead (:mod:`alpaca_nb.self_instruct`):
    ``num_instructions`` is then the number of new instructions of step 1, ``max_requests`` bounds all steps
    together, ``max_tokens`` caps steps 1 and 3, and each step samples with upstream's settings (``temperature``,
    ``top_p``, ``stop`` and ``num_prompt_instructions`` apply to Alpaca's recipe only).
    """

    num_instructions: int = 100
    output_dir: str | None = None
    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    api: str | None = None
    seed_tasks: str | None = None
    num_prompt_instructions: int = 3
    request_batch_size: int = 5
    max_concurrency: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int = 42
    similarity_threshold: float = 0.7
    max_requests: int | None = None
    request_timeout: float = 600.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    prices: str | None = None
    progress: bool = True
    recipe: str = "alpaca"

    @property
    def resolved_api(self) -> str:
        api = self.api or ("chat" if self.backend == "openai" else "completions")
        if api not in ("chat", "completions"):
            raise AlpacaNbError(f"api {api!r}: choose 'chat' or 'completions'")
        return api

    @property
    def resolved_max_tokens(self) -> int:
        return self.max_tokens or (LOCAL_MAX_TOKENS if self.backend == "local" else REMOTE_MAX_TOKENS)

    @property
    def resolved_stop(self) -> list[str]:
        if self.stop is not None:
            return self.stop
        return ["###", f"\n{self.num_prompt_instructions + 2}. Instruction"] if self.backend == "local" else REMOTE_STOP

    @property
    def resolved_concurrency(self) -> int:
        return self.max_concurrency or (1 if self.backend == "local" else 8)

    @property
    def prompts_per_request(self) -> int:
        lists_ok = self.resolved_api == "completions" and self.backend != "local"
        return max(1, self.request_batch_size) if lists_ok else 1

    @property
    def out_path(self) -> Path:
        """The output folder, not created: ``output_dir``, else the stage's (its ``self_instruct/`` for that recipe)."""
        if self.output_dir:
            return Path(self.output_dir)
        return outputs_dir(STAGE) / SELF_INSTRUCT_SUBDIR if self.recipe == "self-instruct" else outputs_dir(STAGE)

    def out_dir(self) -> Path:
        """The output folder, created if missing (a file in its place raises :class:`AlpacaNbError`)."""
        return ensure_dir(self.out_path, "--output-dir")

    def validate(self, n_seeds: int | None = None) -> None:
        """Raise :class:`AlpacaNbError` naming the option of the first setting that cannot work.

        Counts must be positive (``max_retries`` may be 0), the output folder must not be a file, and, given
        the size of the seed pool ``n_seeds``, a prompt cannot show more seed tasks than the pool holds.
        """
        minimum = {"num_instructions": 1, "num_prompt_instructions": 1, "request_batch_size": 1, "max_concurrency": 1,
                   "max_tokens": 1, "max_requests": 1, "max_retries": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise AlpacaNbError(f"--{name.replace('_', '-')} {value!r}: must be a whole number of at least {low}")
        if not self.request_timeout > 0:
            raise AlpacaNbError(f"--request-timeout {self.request_timeout!r}: must be a positive number of seconds")
        if n_seeds is not None and self.num_prompt_instructions > n_seeds:
            raise AlpacaNbError(f"--num-prompt-instructions {self.num_prompt_instructions}: the seed tasks "
                                f"({self.seed_tasks or 'the 175 Self-Instruct seeds'}) hold only {n_seeds}; show at "
                                f"most {n_seeds} per prompt")
        if self.output_dir:
            existing = next(p for p in (Path(self.output_dir), *Path(self.output_dir).parents) if p.exists())
            if not existing.is_dir():
                raise AlpacaNbError(f"--output-dir {self.output_dir}: {existing} is a file, not a folder; pass a "
                                    "folder (it is created if missing)")
        _ = self.resolved_api  # raises for an unknown api
        if self.recipe not in RECIPES:
            raise AlpacaNbError(f"--recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")


# --- state on disk ------------------------------------------------------------------------------------

def seed_records(path: str | None) -> list[dict[str, str]]:
    """The seed tasks of ``path`` (default: the 175 Self-Instruct seeds) as Alpaca records."""
    from .data import load_seed_tasks

    return [e.to_alpaca() for e in load_seed_tasks(path)]


COUNT_FIELDS = ("kept", "target", "requests", "prompts", "prompt_tokens", "completion_tokens", "parsed_tasks",
                "beyond_target")


def read_summary(out_dir: Path, recipe: str | None = None) -> dict[str, Any]:
    """``out_dir/summary.json`` of an earlier run (``{}`` if none); one of another shape, or (given ``recipe``) of
    the other recipe, raises :class:`AlpacaNbError` naming the file and the field, before anything is sent or
    written. A summary without ``recipe`` is Alpaca's (written before Self-Instruct's recipe existed)."""
    path = out_dir / SUMMARY_FILE
    if not path.exists():
        return {}
    summary = read_json(path)
    problem = _summary_problem(summary)
    if not problem and recipe and isinstance(summary, dict) and summary.get("recipe", "alpaca") != recipe:
        raise AlpacaNbError(f"{path}: written by --recipe {summary.get('recipe', 'alpaca')}, not {recipe}; pick "
                            "another --output-dir (each recipe resumes only its own runs)")
    if problem:
        raise AlpacaNbError(f"{path}: {problem}, not what `alpaca-nb generate` writes; move the file away (the "
                            f"records in {REGEN_FILE} are kept) or pick another --output-dir")
    return summary


def _summary_problem(s: Any) -> str | None:
    """What is wrong with the shape of a summary, or ``None``."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(s, dict):
        return f"expected a JSON object, found {type(s).__name__}"
    checks = [(k, count, "a count") for k in COUNT_FIELDS] + [
        ("elapsed_s", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
        ("discarded", lambda v: isinstance(v, dict) and all(map(count, v.values())), "an object of counts"),
        ("retries", lambda v: isinstance(v, dict) and all(map(count, v.values())), "an object of counts"),
        ("discard_examples", lambda v: isinstance(v, dict) and all(isinstance(x, list) for x in v.values()),
         "an object of lists"),
        ("sessions", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of objects")]
    for key, ok, kind in checks:
        if key in s and not ok(s[key]):
            return f"field {key!r} should be {kind}, found {json.dumps(s[key])[:40]}"
    return None


def load_regen(out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The records kept so far in ``out_dir/regen.json`` (``[]`` if none); a damaged file is an error."""
    path = Path(out_dir or outputs_dir(STAGE)) / REGEN_FILE
    if not path.exists():
        return []
    records = read_json(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("instruction") for r in records):
        raise AlpacaNbError(f"{path}: expected a JSON list of records with 'instruction'; move the file away to "
                            "start over")
    return records


def prompt_for(config: GenerateConfig, seeds: list[dict[str, str]], index: int, j: int) -> str:
    """The prompt for request ``index``, slot ``j``: the same on every resume, different across requests."""
    rng = random.Random(f"{config.seed}:{index}:{j}")
    return prompts.encode_prompt(rng.sample(seeds, config.num_prompt_instructions))

