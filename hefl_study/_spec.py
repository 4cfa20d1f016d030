"""The study spec: one training job as the administrator declares it (pydantic models)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    field_validator,
    model_validator,
)

from crypto import DEFAULT_PROFILE, PROFILES
from hefl_study._checks import check_study
from hefl_study._errors import SpecError
from hefl_study._tasks import Task

__all__ = [
    "DEFAULT_MISSING_VALUES",
    "BuiltinModel",
    "CommunicationSpec",
    "Compression",
    "DataSpec",
    "Feature",
    "MissingPolicy",
    "ModelSpec",
    "PolicyKind",
    "PrivacyAccountant",
    "PrivacyLevel",
    "PrivacySpec",
    "ScheduleKind",
    "ServerSpec",
    "StalenessKind",
    "StopSpec",
    "StudySpec",
    "TrainingSpec",
    "WeightingKind",
    "is_job_name",
    "spec_to_json",
]


def _int_as_text(value: object) -> object:
    # TOML `classes = [0, 1]` and `classes = ["0", "1"]` match the same cells, so both
    # become text and hash the same; bool is an int subclass and stays an error.
    return str(value) if type(value) is int else value


# Strict: a TOML string "0.1" where a number belongs is a mistake, not something to coerce.
Number = Annotated[float, Strict(), AllowInfNan(False)]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
Value = Annotated[str, Strict(), BeforeValidator(_int_as_text)]
Values = Annotated[tuple[Value, ...], Field(min_length=1)]

MissingPolicy = Literal["drop", "impute", "error"]
BuiltinModel = Literal["logistic", "mlp", "cnn"]
Compression = Literal["dense", "top-k", "random-k"]
StalenessKind = Literal["constant", "polynomial", "hinge"]
PrivacyAccountant = Literal["rdp", "prv"]
PrivacyLevel = Literal["sample", "hospital"]
# Keys of [privacy] that only the sample level has (DP-SGD at each hospital).
_SAMPLE_ONLY = ("epsilon", "rounds", "max_grad_norm", "accountant")
PolicyKind = Literal["async", "rounds"]
WeightingKind = Literal["uniform", "data"]
ScheduleKind = Literal["constant", "inverse-sqrt"]

DEFAULT_MISSING_VALUES: tuple[str, ...] = ("", "NA", "NaN", "?")

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# fl_server.settings' defaults of `a` per staleness kind (Xie et al.); only hinge has `b`.
_STALENESS_A = {"polynomial": 0.5, "hinge": 10.0}
_STALENESS_B = 4
# The spec format: 2 added [server] policy, weighting and schedule. A format-1 spec has
# these values, never written in its canonical JSON.
FORMAT: Literal[2] = 2
# Measured (docs/benchmarks.md section 6): with data weighting the frequency correction
# already lifts a slow hospital, and a staleness penalty on top only takes it back.
DEFAULT_STALENESS: StalenessKind = "constant"
_FORMAT_1_SERVER: dict[str, Any] = {
    "policy": "async",
    "weighting": "uniform",
    "weighting_clip": 4.0,
    "schedule": "constant",
    "schedule_half": 50,
}


def is_job_name(name: str) -> bool:
    """Whether ``name`` can name a study and its job: 1-63 of ``[a-z0-9-]``, not ``-`` first."""
    return _NAME.fullmatch(name) is not None


class _Section(BaseModel):
    # extra="forbid": a misspelt key must be an error, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """``[model]``: a built-in model or a factory, its arguments and its initialization seed.

    Every hospital builds the initial model from this section alone, so it does not
    matter which one uploads it. A factory is called as
    ``factory(input_shape=(width,), n_classes=..., **args)``.
    """

    name: BuiltinModel | None = None
    factory: Text | None = None
    args: dict[str, JsonValue] = Field(default_factory=dict)
    seed: Int = Field(default=0, ge=0)

    @field_validator("factory")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not an import path of the form 'package.module:name'")
        return value


class Feature(_Section):
    """One input column: numeric, or categorical with its categories in one-hot order.

    ``missing`` and ``missing_values`` default to the ``[data]`` ones; in a numeric
    column a token that reads as a number (``"0"``) matches that number however written.
    """

    name: Text = Field(min_length=1)
    type: Literal["numeric", "categorical"]
    categories: Values | None = None
    missing: MissingPolicy = "error"
    missing_values: tuple[Text, ...] = DEFAULT_MISSING_VALUES

    @field_validator("name")
    @classmethod
    def _no_padding(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError(f"{value!r} starts or ends with white space")
        return value

    @property
    def width(self) -> int:
        """Encoded columns: 1 for numeric, one per category for categorical."""
        return len(self.categories) if self.categories is not None else 1


class DataSpec(_Section):
    """``[data]``: the schema of every hospital's table and how it is prepared.

    A study names its data in one of two ways: ``features`` (every hospital trains on a
    table of these columns, checked and encoded by hefl), or ``input_shape`` (every
    hospital brings its own data through a Python factory, whose examples must have this
    shape; the table settings below then do not apply and ``label`` is not needed).

    Attributes
    ----------
    classes
        The label values in order: exactly 2 for binary (the second is the positive
        class), at least 3 for multiclass, none for regression.
    ignore
        Columns a table may have that are not used.
    missing
        ``drop`` the row, ``impute`` (the site's training mean; all-zero one-hot for a
        categorical) or ``error``. A missing label drops the row unless ``error``.
    standardize
        Scale numeric features with the hospital's own training statistics.
    test_fraction, split_seed
        The held-out share of each hospital's rows and the seed of that split.
    min_rows
        Fewest usable rows (after dropping) a hospital's table must have.
    """

    label: Annotated[str, Strict(), Field(min_length=1)] | None = None
    task: Task
    classes: Values | None = None
    features: tuple[Feature, ...] = ()
    input_shape: (
        Annotated[tuple[Annotated[int, Strict(), Field(ge=1)], ...], Field(min_length=1)] | None
    ) = None
    ignore: tuple[Text, ...] = ()
    missing: MissingPolicy = "error"
    missing_values: tuple[Text, ...] = DEFAULT_MISSING_VALUES
    standardize: Bool = True
    test_fraction: Number = Field(default=0.34, gt=0, lt=1)
    split_seed: Int = Field(default=0, ge=0)
    min_rows: Int = Field(default=10, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _features_inherit(cls, data: Any) -> Any:
        # Resolved here so the canonical form (and its hash) holds each feature's
        # effective policy, whether inherited or spelt out. An invalid data-level value
        # is not copied: it is reported once, at data.missing, not once per feature.
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            return data
        inherited: dict[str, Any] = {}
        if data.get("missing", "error") in ("drop", "impute", "error"):
            inherited["missing"] = data.get("missing", "error")
        tokens = data.get("missing_values", DEFAULT_MISSING_VALUES)
        if isinstance(tokens, list | tuple) and all(isinstance(t, str) for t in tokens):
            inherited["missing_values"] = tokens
        features = [{**inherited, **f} if isinstance(f, dict) else f for f in data["features"]]
        return {**data, "features": features}

    @property
    def is_table(self) -> bool:
        """Whether hospitals train on a table of ``features`` (else on a factory's data)."""
        return self.input_shape is None

    @property
    def input_width(self) -> int:
        """Values in one example: numeric features plus every one-hot column of a table."""
        if self.input_shape is not None:
            return math.prod(self.input_shape)
        return sum(f.width for f in self.features)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one example as the model sees it: ``(input_width,)`` for a table."""
        return self.input_shape if self.input_shape is not None else (self.input_width,)

    @property
    def n_outputs(self) -> int:
        """Model outputs: 1 for binary (a logit) and regression, one per class otherwise."""
        return len(self.classes or ()) if self.task == "multiclass" else 1

    @property
    def n_classes(self) -> int:
        """What a model factory's ``n_classes`` gets: the classes, or 1 for regression."""
        return len(self.classes or ()) or 1

    @property
    def encoded_columns(self) -> tuple[str, ...]:
        """Names of the encoded columns in order (``cp=asymptomatic`` for one-hot)."""
        return tuple(
            name
            for f in self.features
            for name in (
                [f.name] if f.categories is None else [f"{f.name}={c}" for c in f.categories]
            )
        )


class TrainingSpec(_Section):
    """``[training]``: local training on each hospital, exactly one of epochs or steps.

    ``client_step`` is η: the update sent is η·compressed(trained - pulled).
    """

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Number = Field(default=0.05, gt=0)
    momentum: Number = Field(default=0.0, ge=0, lt=1)
    batch_size: Int = Field(default=16, ge=1)
    local_epochs: Int | None = Field(default=None, ge=1)
    local_steps: Int | None = Field(default=None, ge=1)
    client_step: Number = Field(default=1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _one_epoch_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "local_epochs" not in data and "local_steps" not in data:
            return {**data, "local_epochs": 1}
        return data


class CommunicationSpec(_Section):
    """``[communication]``: what each update sends.

    Attributes
    ----------
    compression
        ``dense`` sends every block; ``top-k`` the blocks of largest norm; ``random-k``
        blocks drawn from ``compression_seed`` and the round.
    block_fraction
        Share of blocks top-k and random-k send (required for them, < 1).
    personal
        fnmatch patterns of parameter names that never leave the hospital (FedPer).
    """

    compression: Compression = "dense"
    block_fraction: Number | None = Field(default=None, gt=0, le=1)
    error_feedback: Bool = True
    compression_seed: Int = Field(default=0, ge=0)
    personal: tuple[Text, ...] = ()


class ServerSpec(_Section):
    """``[server]``: how the server weighs and admits updates (``fl_server.staleness``,
    ``fl_server.weighting``, ``fl_server.rounds``).

    ``staleness_a`` defaults to 0.5 for polynomial and 10 for hinge; ``staleness_b``
    (hinge only) to 4; ``constant`` (the default since format 2; format 1's was
    polynomial) has neither.

    Attributes
    ----------
    policy
        ``async`` (each update applied as it comes, FedAsync/FedBuff) or ``rounds`` (a
        barrier over ``round_clients`` hospitals, FedAvg's ``n_i / sum n_j``).
    weighting, weighting_clip
        ``data``: an async update counts its hospital's data share times a frequency
        correction clipped to ``[1/clip, clip]``; ``uniform``: every update alike.
    schedule, schedule_half
        The server's step size: ``constant``, or ``inverse-sqrt``
        (``1 / sqrt(1 + t / schedule_half)`` after ``t`` updates).
    round_clients
        The hospitals of each round (``rounds`` only, where it is required).

    A spec of ``format = 1`` (written before these settings) has none of them: its jobs
    keep their behaviour (``async``, ``uniform``, ``constant``) and their hash.
    """

    staleness: StalenessKind = DEFAULT_STALENESS
    staleness_a: Number | None = Field(default=None, gt=0)
    staleness_b: Int | None = Field(default=None, ge=0)
    mixing: Number = Field(default=1.0, gt=0, le=1)
    max_staleness: Int = Field(default=64, ge=0)
    buffer_size: Int = Field(default=1, ge=1, le=10_000)
    max_training: Int = Field(default=32, ge=1)
    policy: PolicyKind = "async"
    weighting: WeightingKind = "data"
    weighting_clip: Number = Field(default=4.0, ge=1, le=1000)
    schedule: ScheduleKind = "inverse-sqrt"
    schedule_half: Int = Field(default=50, ge=1)
    round_clients: Int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kind = data.get("staleness", DEFAULT_STALENESS)
        filled = dict(data)
        if kind in _STALENESS_A:
            filled.setdefault("staleness_a", _STALENESS_A[kind])
        if kind == "hinge":
            filled.setdefault("staleness_b", _STALENESS_B)
        return filled

    @model_validator(mode="after")
    def _rounds_need_clients(self) -> ServerSpec:
        if self.policy == "rounds" and self.round_clients is None:
            raise ValueError("policy 'rounds' needs round_clients (the hospitals of a round)")
        if self.policy == "async" and self.round_clients is not None:
            raise ValueError("round_clients is for policy 'rounds' only")
        return self


class StopSpec(_Section):
    """``[stop]``: the job is done at the first rule met (at least one is required).

    ``metric`` is a pooled metric of the task (see ``TASK_METRICS``) and ``value`` its
    target: reached at or above it, or at or below it for loss, mae and rmse. The pooled
    value is the row-weighted mean of each hospital's latest report, and counts once at
    least ``min_sites`` hospitals have reported. ``max_wall_seconds`` counts the time the
    job spends training (paused time excluded).
    """

    target_updates: Int | None = Field(default=None, ge=1)
    max_wall_seconds: Number | None = Field(default=None, gt=0)
    metric: Text | None = None
    value: Number | None = None
    min_sites: Int = Field(default=2, ge=1)


class PrivacySpec(_Section):
    """``[privacy]``: differential privacy of each patient row (``level = "sample"``, the
    default: DP-SGD at every hospital, Opacus) or of each hospital's whole contribution
    (``level = "hospital"``: clipped updates, noise added by the server).

    Sample level: each hospital clips every example's gradient to ``max_grad_norm``, adds
    Gaussian noise of ``noise_multiplier · max_grad_norm`` to each batch's sum, samples
    batches by Poisson sampling (rate ``batch_size / rows``), and stops taking part once
    one more round would take its (ε, δ) beyond ``epsilon`` (its own rows, its own
    accountant). Give exactly one of ``rounds`` and ``noise_multiplier``: ``rounds`` is
    the number of local rounds a hospital plans to train, and each hospital derives the
    smallest noise multiplier that keeps those rounds within ``epsilon`` on its own rows
    (the usual choice: the budget then lasts the planned rounds); a given
    ``noise_multiplier`` is the same for every hospital, and the budget lasts as many
    rounds as it lasts.

    Hospital level: each hospital clips the L2 norm of every update to ``clip``, and the
    server adds Gaussian noise of ``noise_multiplier · clip · w`` to every parameter of
    the encrypted model as it applies an update of weight ``w``; it reports the ε each
    hospital has spent at ``delta`` (RDP, sampling rate 1, one Gaussian mechanism per
    applied update). No budget stop: ``epsilon``, ``rounds``, ``max_grad_norm`` and
    ``accountant`` belong to the sample level.

    Attributes
    ----------
    level
        ``sample`` (DP-SGD at each hospital) or ``hospital`` (clipped updates, noise at
        the server).
    epsilon, delta
        The target (ε, δ) of each hospital; δ well below 1 / rows (1e-5 by default). At
        the hospital level ``delta`` is the δ ε is reported at.
    max_grad_norm
        The L2 bound of one example's gradient (DP-SGD's clipping norm C).
    accountant
        Opacus' accountant: ``rdp`` (Rényi DP) or ``prv`` (privacy random variables,
        tighter). Opacus' ``gdp`` is left out: it can underestimate what was spent.
    clip
        Hospital level: the L2 bound of one update (``η · delta``, the shared tensors).
    """

    level: PrivacyLevel = "sample"
    epsilon: Number | None = Field(default=None, gt=0, le=100)
    delta: Number = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: Number = Field(default=1.0, gt=0)
    accountant: PrivacyAccountant = "rdp"
    rounds: Int | None = Field(default=None, ge=1, le=100_000)
    noise_multiplier: Number | None = Field(default=None, gt=0, le=1000)
    clip: Number | None = Field(default=None, gt=0, le=1e4)

    @model_validator(mode="after")
    def _one_calibration(self) -> PrivacySpec:
        if self.level == "hospital":
            wrong = [k for k in _SAMPLE_ONLY if k in self.model_fields_set]
            if wrong:
                raise ValueError(
                    f'{", ".join(wrong)}: sample-level settings, not for level = "hospital" '
                    "(give clip, noise_multiplier and delta; the server reports ε)"
                )
            if self.clip is None or self.noise_multiplier is None:
                raise ValueError('level = "hospital" needs clip and noise_multiplier')
            return self
        if self.clip is not None:
            raise ValueError(
                'clip bounds a hospital\'s update: it is for level = "hospital" '
                "(the sample level bounds each example's gradient with max_grad_norm)"
            )
        if self.epsilon is None:
            raise ValueError("epsilon: the sample level needs the target ε of each hospital")
        if (self.rounds is None) == (self.noise_multiplier is None):
            raise ValueError(
                "give exactly one of rounds (the noise is derived from the budget) "
                "and noise_multiplier"
            )
        return self


class StudySpec(_Section):
    """A study: one training job, everything every party must agree on.

    Built by ``load_spec`` / ``spec_from_toml`` / ``spec_from_json``, which report every
    problem at once as a ``SpecError``. ``sha256`` identifies it: the job holds it and
    every client checks it.
    """

    format: Literal[1, 2] = FORMAT
    name: Text
    description: Text = ""
    profile: Text = DEFAULT_PROFILE.name
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    communication: CommunicationSpec = Field(default_factory=CommunicationSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    stop: StopSpec
    privacy: PrivacySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _format_1_server(cls, data: Any) -> Any:
        # A format-1 spec predates the weighting settings: its jobs keep the behaviour
        # they were created with (and the canonical JSON, so the hash, they had).
        if not isinstance(data, dict) or data.get("format") != 1:
            return data
        server = data.get("server", {})
        if not isinstance(server, dict):
            return data
        legacy = {**_FORMAT_1_SERVER, "round_clients": None}
        newer = sorted(k for k in server if k in legacy and server[k] != legacy[k])
        if newer:
            raise ValueError(
                f"[server] {', '.join(newer)}: not in a format 1 spec (write format = 2)"
            )
        # format 1's staleness default was polynomial
        return {**data, "server": {"staleness": "polynomial", **server, **_FORMAT_1_SERVER}}

    @field_validator("name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a job name: 1-63 lowercase letters, digits and '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(
                f"unknown CKKS profile {value!r}; known: {', '.join(sorted(PROFILES))}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        problems = check_study(self)
        if problems:
            raise SpecError(problems)
        return self

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of ``spec_to_json(self)``: equal for equal studies however written."""
        return hashlib.sha256(spec_to_json(self).encode("utf-8")).hexdigest()


def spec_to_json(spec: StudySpec) -> str:
    """The canonical JSON of a spec: every default filled, keys sorted, no white space.

    The same study written two ways (key order, comments, defaults spelt out or not,
    ``0`` or ``"0"`` as a class) gives the same text, so its hash names the study. An
    absent ``[privacy]`` is absent here too: a study without it keeps the hash it had
    before the section existed.
    """
    data = spec.model_dump(mode="json")
    if data.get("privacy") is None:
        del data["privacy"]
    elif spec.privacy is not None:
        # each level writes only its own keys: a sample-level study keeps the hash it had
        # before the hospital level existed, and the JSON reads back as the same spec
        other = ("level", "clip") if spec.privacy.level == "sample" else _SAMPLE_ONLY
        for key in other:
            del data["privacy"][key]
    if spec.format == 1:
        for key in (*_FORMAT_1_SERVER, "round_clients"):
            del data["server"][key]
    return json.dumps(
        data,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
