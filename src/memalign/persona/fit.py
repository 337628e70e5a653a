"""Fit one person's steering (PAS) from their answers to the training items, strength chosen by CV.

Per person (everything per model is in the :class:`~memalign.persona.session.QuestionnaireSession`):

1. labels: the person's *raw* stance on each training item (4-5 agree, 1-2 disagree; 3 and missing
   are skipped), two probe samples per item (its agree and disagree prompt);
2. probes on every head, ranked by item-grouped held-out accuracy; the top-K heads;
3. centre-of-mass unit directions and the std of the projections on them (PAlign/ITI);
4. strength ``alpha`` (and optionally K) by K-fold cross-validation over the training items only: each
   fold refits steps 1-3 without its items, steers, and scores them from the option-token
   probabilities; the objective is the mean |expected answer - raw answer| on the held-out items.
   PAlign instead picked alpha on the 180 *test* answers (an oracle).

The fit only ever sees the answers it is given, restricted to the session's (training) items, so no
test answer can influence it (a test in the suite poisons the test answers to check).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import memalign
from memalign.errors import ConfigError, DataError
from memalign.models.arch import ArchSpec, get_arch_spec
from memalign.persona.capture import HeadActivations, model_identity
from memalign.persona.instruments import Item
from memalign.persona.probes import com_directions, probe_scores, projection_std
from memalign.persona.prompts import PromptConfig
from memalign.persona.scoring import check_prediction
from memalign.persona.session import QuestionnaireSession
from memalign.persona.steering import Steering, check_positions
from memalign.persona.subjects import SubjectAnswers
from memalign.progress import progress_bar, status

PALIGN_ALPHA_GRID = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0)
# PAlign's grid plus negative strengths: the direction's sign follows the person's majority stance, but
# an unsteered instruct model already over-agrees (it answers "Moderately Accurate" to everything), so
# pushing *against* the majority is often what brings its answers to the person's level; CV decides.
# The negative side stops at -4: on 12 development subjects (PAPI 10-21, not the reported ones) CV
# picked -6/-8 for three of them and two got worse on the test items; capped, 9/12 improve.
SIGNED_ALPHA_GRID = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0)
DEFAULT_K_GRID = (24, 64)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """PAS hyper-parameters. ``k_grid`` non-empty: K is chosen by CV among its values (``k`` ignored).

    ``positions`` is the steering policy the strength is selected for (and saved with): ``generated``
    only recomputes the last prompt token per candidate, which is what makes CV cheap on a CPU; ``all``
    (PAlign's bias) re-encodes every held-out prompt per candidate. :meth:`palign` gives the reference
    settings (K 24, alpha in {0,1,2,4,6,8}, every position).
    """

    k: int = 24
    alpha_grid: tuple[float, ...] = SIGNED_ALPHA_GRID
    k_grid: tuple[int, ...] = DEFAULT_K_GRID
    cv_folds: int = 5
    probe_folds: int = 4
    probe_c: float = 1.0
    seed: int = 0
    positions: str = "generated"
    prediction: str = "expected"
    min_items: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha_grid", tuple(float(a) for a in self.alpha_grid))
        object.__setattr__(self, "k_grid", tuple(int(k) for k in self.k_grid))
        if not self.alpha_grid or not all(math.isfinite(a) for a in self.alpha_grid):
            raise ConfigError("alpha_grid must be a non-empty list of finite numbers")
        if len(set(self.alpha_grid)) != len(self.alpha_grid):
            raise ConfigError("alpha_grid has duplicates")
        if any(k < 1 for k in (self.k, *self.k_grid)):
            raise ConfigError("K (number of steered heads) must be >= 1")
        if self.cv_folds < 2 or self.probe_folds < 2:
            raise ConfigError("cv_folds and probe_folds must be >= 2")
        if self.probe_c <= 0:
            raise ConfigError("probe_c must be > 0")
        if self.min_items < 2:
            raise ConfigError("min_items must be >= 2")
        check_positions(self.positions)
        check_prediction(self.prediction)

    @classmethod
    def palign(cls, **overrides: Any) -> FitConfig:
        """PAlign's settings (K 24, its alpha grid, shift at every position), alpha still chosen by CV."""
        return cls(**{"k": 24, "k_grid": (), "alpha_grid": PALIGN_ALPHA_GRID, "positions": "all", **overrides})

    @property
    def k_candidates(self) -> tuple[int, ...]:
        return self.k_grid or (self.k,)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alpha_grid": list(self.alpha_grid), "k_grid": list(self.k_grid)}


@dataclass(frozen=True)
class FitResult:
    """The steering plus how it was chosen: CV MAE per (K, alpha) on the held-out training items."""

    steering: Steering
    k: int
    alpha: float
    cv_mae: dict[tuple[int, float], float]
    n_labeled: int
    n_scored: int
    seconds: float
    head_accuracy: tuple[float, ...] = field(default=())
    cpu_seconds: float = math.nan  # process CPU time: comparable across machine load, unlike ``seconds``
    cv_errors: dict[tuple[int, float], dict[int, float]] = field(default_factory=dict, repr=False)

    @property
    def unsteered_cv_mae(self) -> float:
        return self.cv_mae.get((self.k, 0.0), math.nan)

    @property
    def best_cv_mae(self) -> float:
        return self.cv_mae[(self.k, self.alpha)]

    def cv_table(self) -> list[dict[str, float]]:
        return [{"k": k, "alpha": a, "cv_mae": v} for (k, a), v in sorted(self.cv_mae.items())]


def _raw_answers(answers: SubjectAnswers | Mapping[int, int | None], item_ids: Sequence[int]) -> dict[int, int | None]:
    raw = answers.raw if isinstance(answers, SubjectAnswers) else answers
    out: dict[int, int | None] = {}
    for item_id in item_ids:
        value = raw.get(item_id)
        if value is not None and value not in (1, 2, 3, 4, 5):
            raise DataError(f"item {item_id}: raw answer must be 1..5 or missing, got {value!r}")
        out[item_id] = value
    return out


def _stance(value: int | None) -> int:
    return 0 if value is None or value == 3 else (1 if value > 3 else -1)


def _heads_steering(
    activations: HeadActivations,
    stances: Mapping[int, int],
    spec: ArchSpec,
    config: FitConfig,
    seed: int,
    ks: Sequence[int],
) -> tuple[dict[int, Steering], torch.Tensor]:
    """Probe-rank heads on these items and build a steering (alpha 1) for each K, plus the held-out
    probe accuracies in ranking order.

    Heads whose two classes have the same mean (e.g. a first-layer head that only sees the current
    token, when both prompts end in the same token) have no direction and are never chosen.
    """
    x, y, groups = activations.samples(stances)
    scores = probe_scores(x, y, groups, folds=config.probe_folds, seed=seed, c=config.probe_c)
    gap = (x[y > 0.5].mean(0) - x[y <= 0.5].mean(0)).norm(dim=-1)
    ranking = scores.ranking()
    ranking = ranking[gap[ranking] > 1e-6 * gap.max()]
    if len(ranking) < max(ks):
        raise ConfigError(f"only {len(ranking)} heads separate the two prompts at all; K = {max(ks)} is too many")
    out = {}
    for k in ks:
        chosen = ranking[:k]
        directions = com_directions(x[:, chosen], y)
        stds = projection_std(x[:, chosen], directions)
        heads = [divmod(int(i), spec.num_heads) for i in chosen]
        out[k] = Steering(
            tuple(heads), directions, stds, 1.0, spec.num_layers, spec.num_heads, spec.head_dim, config.positions
        )
    return out, scores.accuracy[ranking]


def _sweep_generated(
    session: QuestionnaireSession,
    candidates: list[tuple[int, float, list[int], Steering]],
    raw: Mapping[int, int | None],
    errors: dict[tuple[int, float], dict[int, float]],
    prediction: str,
) -> None:
    """Score every (candidate, held-out item) pair in a few wide forwards, one shift per row."""
    items: list[int] = []
    blocks: list[tuple[int, int, dict[int, torch.Tensor]]] = []
    for _, alpha, held_out, steering in candidates:
        held = [i for i in held_out if raw[i] is not None]
        blocks.append((len(items), len(items) + len(held), steering.layer_shifts(alpha)))
        items += held
    if not items:
        return
    q_size = candidates[0][3].q_size
    shifts: dict[int, torch.Tensor] = {}
    for begin, end, layer_shifts in blocks:
        for layer, shift in layer_shifts.items():
            shifts.setdefault(layer, torch.zeros(len(items), q_size))[begin:end] = shift
    with status(f"Scoring {len(candidates)} candidate steerings on their held-out items ({len(items)} rows)"):
        predictions = session.score_rows(items, shifts).predictions(prediction).tolist()
    for (k, alpha, _, _), (begin, end, _) in zip(candidates, blocks, strict=True):
        errors[(k, alpha)].update({items[r]: abs(predictions[r] - raw[items[r]]) for r in range(begin, end)})


def fit_steering(
    session: QuestionnaireSession,
    activations: HeadActivations,
    answers: SubjectAnswers | Mapping[int, int | None],
    config: FitConfig | None = None,
    meta: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit a person's steering on the session's items (see the module docstring for the steps).

    ``answers`` may hold more items than the session (a whole questionnaire); only the session's items
    are read, so pass a session over the *training* items.
    """
    config = config or FitConfig()
    start, cpu_start = time.perf_counter(), time.process_time()
    spec = get_arch_spec(session.model)
    if activations.shape != (spec.num_layers, spec.num_heads, spec.head_dim):
        raise ConfigError(
            f"activations have (layers, heads, head_dim) {activations.shape}, the model "
            f"{(spec.num_layers, spec.num_heads, spec.head_dim)}"
        )
    max_k = max(config.k_candidates)
    if max_k > spec.num_layers * spec.num_heads:
        raise ConfigError(f"K = {max_k} exceeds the model's {spec.num_layers * spec.num_heads} heads")
    raw = _raw_answers(answers, session.item_ids)
    stances = {i: _stance(v) for i, v in raw.items()}
    labeled = [i for i in session.item_ids if stances[i] != 0]
    scored = [i for i in session.item_ids if raw[i] is not None]
    if len(labeled) < config.min_items:
        raise DataError(
            f"only {len(labeled)} of the {len(raw)} training items have a non-neutral answer; at least "
            f"{config.min_items} are needed to fit a steering"
        )

    folds = min(config.cv_folds, len(scored))
    order = torch.randperm(len(scored), generator=torch.Generator().manual_seed(config.seed)).tolist()
    fold_items = [[scored[j] for j in part] for part in torch.tensor_split(torch.tensor(order), folds) if len(part)]
    ks = config.k_candidates
    nonzero = [a for a in config.alpha_grid if a != 0.0]
    errors: dict[tuple[int, float], dict[int, float]] = {(k, a): {} for k in ks for a in config.alpha_grid}
    if 0.0 in config.alpha_grid:
        base = session.score(item_ids=scored).abs_errors(raw, config.prediction)
        for k in ks:
            errors[(k, 0.0)] = {i: base[i] for i in scored}
    candidates: list[tuple[int, float, list[int], Steering]] = []
    with progress_bar("Fitting fold probes", total=len(fold_items), unit="folds") as advance:
        for f, held_out in enumerate(fold_items):
            train_stances = {i: stances[i] for i in labeled if i not in set(held_out)}
            if sum(1 for s in train_stances.values() if s) < 2:
                raise DataError("too few non-neutral training answers outside a CV fold; lower cv_folds")
            steerings, _ = _heads_steering(activations, train_stances, spec, config, config.seed + 1 + f, ks)
            candidates += [(k, alpha, held_out, steerings[k]) for k in ks for alpha in nonzero]
            advance(1)
    if config.positions == "generated":
        _sweep_generated(session, candidates, raw, errors, config.prediction)
    else:
        with progress_bar(
            "Scoring candidates (positions=all re-encodes prompts)", total=len(candidates), unit="fits"
        ) as advance:
            for k, alpha, held_out, steering in candidates:
                scores = session.score(steering, alpha=alpha, item_ids=held_out)
                errors[(k, alpha)].update(scores.abs_errors(raw, config.prediction))
                advance(1)
    cv_mae = {key: sum(v.values()) / len(v) for key, v in errors.items()}
    best_k, best_alpha = min(cv_mae, key=lambda key: (round(cv_mae[key], 12), abs(key[1]), key[0]))
    logger.info(
        "CV chose K=%d, alpha=%g (held-out MAE %.3f; unsteered %.3f)",
        best_k,
        best_alpha,
        cv_mae[(best_k, best_alpha)],
        cv_mae.get((best_k, 0.0), math.nan),
    )

    final, accuracy = _heads_steering(
        activations, {i: stances[i] for i in labeled}, spec, config, config.seed, [best_k]
    )
    info = {
        "library_version": memalign.__version__,
        **model_identity(session.model),
        "k": best_k,
        "alpha": best_alpha,
        "positions": config.positions,
        "seed": config.seed,
        "fit_config": config.to_dict(),
        "prompt_config": session.config.to_dict(),
        "train_items": list(session.item_ids),
        "cv_mae": [{"k": k, "alpha": a, "mae": v} for (k, a), v in sorted(cv_mae.items())],
        "n_labeled": len(labeled),
        "n_scored": len(scored),
        **dict(meta or {}),
    }
    steering = final[best_k].with_alpha(best_alpha)
    steering = Steering(
        steering.heads,
        steering.directions,
        steering.stds,
        steering.alpha,
        steering.num_layers,
        steering.num_heads,
        steering.head_dim,
        steering.positions,
        info,
    )
    return FitResult(
        steering,
        best_k,
        best_alpha,
        cv_mae,
        len(labeled),
        len(scored),
        time.perf_counter() - start,
        tuple(accuracy[:best_k].tolist()),
        time.process_time() - cpu_start,
        errors,
    )


class PersonaAligner:
    """PAS for one model and one set of training items: prepare once, then :meth:`fit` any number of people.

    Preparing encodes the item prompts and captures the head activations of their agree/disagree
    prompts (both cached on disk, so a second process starts in about a second).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        items: Sequence[Item],
        instrument: str = "IPIP-NEO-120",
        prompt_config: PromptConfig | None = None,
        fit_config: FitConfig | None = None,
        rewordings: Mapping[int, str] | None = None,
        batch_size: int = 16,
        cache: bool | str = True,
    ) -> None:
        self.instrument = instrument
        self.fit_config = fit_config or FitConfig()
        self.session = QuestionnaireSession(
            model, tokenizer, items, prompt_config, rewordings, batch_size=batch_size, cache=cache
        )
        self._activations: HeadActivations | None = None

    @property
    def activations(self) -> HeadActivations:
        if self._activations is None:
            self._activations = self.session.capture()
        return self._activations

    def prepare(self) -> PersonaAligner:
        """Encode and capture now (otherwise the first :meth:`fit` does)."""
        _ = self.session.bank
        _ = self.activations
        return self

    def fit(
        self,
        answers: SubjectAnswers | Mapping[int, int | None],
        config: FitConfig | None = None,
        subject_id: str | None = None,
    ) -> FitResult:
        if isinstance(answers, SubjectAnswers):
            subject_id = subject_id or answers.subject_id
            answers = answers.restrict(self.session.item_ids)
        meta = {"instrument": self.instrument, "subject_id": subject_id}
        return fit_steering(self.session, self.activations, answers, config or self.fit_config, meta)
