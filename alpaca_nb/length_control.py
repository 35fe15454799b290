"""Lesson 05: AlpacaEval 2's length-controlled win rate (a logistic-regression GLM on the annotations).

Reproduces ``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`` (tatsu-lab/alpaca_eval @
19866ff84cd815cb8907c27fd34766541813cfa0, src/alpaca_eval/metrics/glm_winrate.py; the code of alpaca_eval 0.6.6):

* each annotation's preference ``p`` (0 read as 1.5) becomes ``y = p - 1`` in [0, 1], a probability that
  output_2 (the model) wins;
* the length feature is ``tanh(Δ / sd(Δ))`` with ``Δ = len(output_1) - len(output_2)`` in characters (baseline
  minus model; ``sd`` over all annotations, ddof 1);
* ``length_controlled_minimal`` (the default here, needs nothing but the annotations) fits
  ``logit P(model wins) = w_len·tanh(Δ/sd) + w_model`` with no intercept; ``length_controlled_v1`` adds
  ``w_diff·instruction_difficulty`` and, in AlpacaEval, regularises towards two "gamed" baselines;
* the fit is AlpacaEval's ``fit_LogisticRegressionCV``: the soft labels are written as two weighted rows per
  annotation (label 1 with weight ``y``, label 0 with weight ``1 - y``), and scikit-learn's
  ``LogisticRegressionCV`` (L1, liblinear, ``random_state=123``, no intercept, 10 values of C) picks C by a
  5-fold ``GroupKFold`` (both rows of an annotation in the same fold) on AlpacaEval's continuous log loss;
* the length-controlled win rate is the mean predicted probability with the length difference set to 0, in
  percent, and ``lc_standard_error`` the standard error of those predictions. With the minimal formula every
  prediction is the same number (nothing but the length term varies between annotations), so its
  ``lc_standard_error`` is 0: AlpacaEval's own value, not an estimate of sampling error.

Only annotations whose preference the win rate keeps (:func:`alpaca_nb.winrate.preference_score`) are fitted on,
as AlpacaEval fits on the non-NaN ones. Nothing is downloaded: ``length_controlled_v1`` needs an
instruction-difficulty CSV given by the user (AlpacaEval's ``instruction_difficulty.csv``: index, difficulty;
or its ``df_gamed.csv``, which also carries the gamed baselines' annotations and so gives the regularised fit).
Given only the difficulties the fit is AlpacaEval's ``length_controlled_noreg`` (v1 without the regularisation),
and the result says so in ``lc_glm``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from .errors import AlpacaNbError

GLM_FORMULAS = {  # AlpacaEval's GLM_INFO: the patsy formula and the weight of the gamed baselines' rows
    "length_controlled_minimal": ("np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1", None),
    "length_controlled_noreg": ("np.tanh(std_delta_len) + instruction_difficulty + "
                                "not_gamed_baseline.astype(float) - 1", None),
    "length_controlled_v1": ("np.tanh(std_delta_len) + instruction_difficulty + "
                             "not_gamed_baseline.astype(float) - 1", 0.2),
}
N_SPLITS = 5


def read_instruction_difficulty(path: str | Path) -> dict[str, Any]:
    """An instruction-difficulty CSV: ``{"difficulty": {index: float}, "gamed": rows or None}``.

    Accepts AlpacaEval's ``instruction_difficulty.csv`` (first column the instruction's index, then its difficulty)
    or ``df_gamed.csv`` (columns ``index``, ``instruction_difficulty``, ``not_gamed_baseline``, ``std_delta_len``,
    ``preference``: the difficulties plus the gamed baselines' annotations, which give the regularised v1 fit).
    """
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise AlpacaNbError(f"{path}: cannot read the instruction-difficulty CSV ({err}); give AlpacaEval's "
                            "instruction_difficulty.csv or df_gamed.csv") from None
    gamed_columns = {"index", "instruction_difficulty", "not_gamed_baseline", "std_delta_len", "preference"}
    if gamed_columns <= set(table.columns):
        first = table.drop_duplicates("index")
        difficulty = dict(zip(first.index, first["instruction_difficulty"]))  # as AlpacaEval looks it up
        return {"difficulty": difficulty, "gamed": table}
    if table.shape[1] < 2 or not pd.api.types.is_numeric_dtype(table.iloc[:, 1]):
        raise AlpacaNbError(f"{path}: expected two columns (instruction index, difficulty as a number), or "
                            "AlpacaEval's df_gamed.csv; give AlpacaEval's instruction_difficulty.csv")
    return {"difficulty": dict(zip(table.iloc[:, 0], table.iloc[:, 1].astype(float))), "gamed": None}


def _fit(features, probs, sample_weight=None):
    """AlpacaEval's ``fit_LogisticRegressionCV(..., is_ytrue_proba=True, n_splits=5)``: the fitted model."""
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(probs)
    x = np.vstack([features, features])
    y = np.r_[np.ones(n), np.zeros(n)]
    true_prob = np.r_[probs, 1 - probs]
    true_weight = None if sample_weight is None else np.r_[sample_weight, sample_weight]
    groups = np.r_[np.arange(n), np.arange(n)]

    def log_loss(y_true, y_pred, true_prob, true_sample_weight=None):  # AlpacaEval's logloss_continuous
        target = np.where(y_true == 1, true_prob, 1 - true_prob)
        y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
        losses = target * np.log(y_pred) + (1 - target) * np.log(1 - y_pred)
        return -np.mean(losses if true_sample_weight is None else losses * true_sample_weight)

    from sklearn.exceptions import ConvergenceWarning

    # liblinear's "failed to converge" on a few dozen annotations is silenced: the result is AlpacaEval's either way
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scorer = make_scorer(log_loss, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_prob=True, true_sample_weight=True)
        # l1_ratios=(1,) is penalty="l1" (its name in scikit-learn >= 1.8)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=N_SPLITS), scoring=scorer, random_state=123,
                                     l1_ratios=(1,), solver="liblinear", fit_intercept=False,
                                     use_legacy_attributes=False)
        model.set_fit_request(sample_weight=True)
        model.fit(x, y, sample_weight=true_prob if true_weight is None else true_prob * true_weight, groups=groups,
                  true_prob=true_prob, true_sample_weight=true_weight)
    return model


def length_controlled_winrate(annotations: Sequence[dict[str, Any]], scores: Sequence[float | None],
                              instruction_difficulty: dict[str, Any] | None = None) -> dict[str, Any]:
    """``length_controlled_winrate`` and ``lc_standard_error`` (percent) and ``lc_glm`` (the formula's name).

    ``scores`` are output_2's per-annotation scores in [0, 1] (``None``: left out of the fit), as
    :func:`alpaca_nb.winrate.preference_score` gives them. ``instruction_difficulty`` is
    :func:`read_instruction_difficulty`'s result, indexed by the annotation's position; without it the minimal
    formula is fitted. On a few dozen annotations the cross-validated L1 fit often shrinks every weight to 0 and
    gives 50: the length-controlled rate is meant for hundreds of annotations. When every kept score is the same
    (all wins, all losses or all draws) the rate is that score. The values are ``None`` when the GLM cannot be
    fitted: an annotation lacks
    ``output_1`` (text), fewer than 5 scores are kept, or all length differences are equal. When output_1 and
    output_2 come from the same generator the rate is 50 by construction, as in AlpacaEval.
    """
    import numpy as np

    if instruction_difficulty is None:
        name = "length_controlled_minimal"
    else:
        name = "length_controlled_v1" if instruction_difficulty.get("gamed") is not None else "length_controlled_noreg"
    none = {"length_controlled_winrate": None, "lc_standard_error": None, "lc_glm": name}
    generators = {(a.get("generator_1"), a.get("generator_2")) for a in annotations}
    if len(generators) == 1 and (pair := generators.pop())[0] is not None and pair[0] == pair[1]:
        return none | {"length_controlled_winrate": 50.0, "lc_standard_error": 0.0}
    if not annotations or any(not isinstance(a.get("output_1"), str) for a in annotations):
        return none
    kept = {s for s in scores if s is not None}
    if sum(s is not None for s in scores) < N_SPLITS:
        return none
    if len(kept) == 1:
        # Nothing to fit: every kept verdict is the same. AlpacaEval's fit then gives 50 for all losses (liblinear
        # sees one class) and ~100 for all wins; here the rate is the raw one, whatever the lengths (a named
        # difference, README "What differs from the originals").
        return none | {"length_controlled_winrate": kept.pop() * 100, "lc_standard_error": 0.0}
    delta = np.array([len(a["output_1"]) - len(a["output_2"]) for a in annotations], dtype=float)
    sd = delta.std(ddof=1)
    if not sd > 0:
        return none
    columns = [np.tanh(delta / sd)]
    test_columns = [np.zeros(len(annotations))]
    if instruction_difficulty is not None:
        table = instruction_difficulty["difficulty"]
        missing = [i for i in range(len(annotations)) if i not in table]
        if missing:
            raise AlpacaNbError(f"the instruction-difficulty file has no difficulty for annotation {missing[0]} "
                                f"(of {len(annotations)}); give the file that matches these annotations' order "
                                "(AlpacaEval's 805 instructions), or leave out --instruction-difficulty")
        difficulty = np.array([float(table[i]) for i in range(len(annotations))])
        columns.append(difficulty)
        test_columns.append(difficulty)
    columns.append(np.ones(len(annotations)))  # not_gamed_baseline: this model's own rows
    test_columns.append(np.ones(len(annotations)))
    keep = np.array([s is not None for s in scores])
    features = np.column_stack(columns)[keep]
    probs = np.array([s for s in scores if s is not None], dtype=float)
    weights = None
    gamed = None if instruction_difficulty is None else instruction_difficulty.get("gamed")
    if gamed is not None and len(gamed):
        # AlpacaEval concatenates df_gamed's rows (preference already in [0, 1]) before this model's, weighting
        # the gamed baselines' rows by lambda / 2 ("two gamed baselines") and the others by 1
        lam = GLM_FORMULAS[name][1]
        g = gamed.dropna(subset=["preference"])
        own = g["not_gamed_baseline"].astype(bool).to_numpy()
        gamed_features = np.column_stack([np.tanh(g["std_delta_len"].to_numpy(dtype=float)),
                                          g["instruction_difficulty"].to_numpy(dtype=float), own.astype(float)])
        weights = np.r_[np.where(own, 1.0, lam / 2), np.ones(len(probs))]
        features = np.vstack([gamed_features, features])
        probs = np.r_[g["preference"].to_numpy(dtype=float), probs]
    model = _fit(features, probs, weights)
    predicted = model.predict_proba(np.column_stack(test_columns))[:, 1]
    sem = predicted.std(ddof=1) / math.sqrt(len(predicted)) if len(predicted) > 1 else float("nan")
    return {"length_controlled_winrate": float(predicted.mean() * 100),
            "lc_standard_error": None if math.isnan(sem) else float(sem * 100), "lc_glm": name}
