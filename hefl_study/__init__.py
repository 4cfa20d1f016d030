"""hefl studies: the declarative spec of one training job, shared by admin, server and clients.

Pure: text in, validated value objects and canonical JSON out; no file is written and
nothing is imported from the services.
"""

from hefl_study._checks import BUILTIN_MODEL_ARGS
from hefl_study._errors import Problem, SpecError
from hefl_study._load import load_spec, spec_from_json, spec_from_mapping, spec_from_toml
from hefl_study._spec import (
    DEFAULT_MISSING_VALUES,
    BuiltinModel,
    CommunicationSpec,
    Compression,
    DataSpec,
    Feature,
    MissingPolicy,
    ModelSpec,
    PrivacyAccountant,
    PrivacyLevel,
    PrivacySpec,
    ServerSpec,
    StalenessKind,
    StopSpec,
    StudySpec,
    TrainingSpec,
    is_job_name,
    spec_to_json,
)
from hefl_study._tasks import METRIC_GOALS, TASK_METRICS, Task, metric_reached

__all__ = [
    "BUILTIN_MODEL_ARGS",
    "DEFAULT_MISSING_VALUES",
    "METRIC_GOALS",
    "TASK_METRICS",
    "BuiltinModel",
    "CommunicationSpec",
    "Compression",
    "DataSpec",
    "Feature",
    "MissingPolicy",
    "ModelSpec",
    "PrivacyAccountant",
    "PrivacyLevel",
    "PrivacySpec",
    "Problem",
    "ServerSpec",
    "SpecError",
    "StalenessKind",
    "StopSpec",
    "StudySpec",
    "Task",
    "TrainingSpec",
    "is_job_name",
    "load_spec",
    "metric_reached",
    "spec_from_json",
    "spec_from_mapping",
    "spec_from_toml",
    "spec_to_json",
]
