"""The public names of ``fl_client``, for type checkers and for ``lazy_loader.attach_stub``.

Every name here is loaded on first use by ``fl_client/__init__.py``; this file is the
one list of them (relative imports, the form ``attach_stub`` reads; ``X as X``, the form
that re-exports a name from a stub).
"""

from .data import (
    DATASETS as DATASETS,
    ClientData as ClientData,
    SiteArrays as SiteArrays,
    Standardizer as Standardizer,
    dataset_sites as dataset_sites,
    dirichlet_split as dirichlet_split,
    load_client_data as load_client_data,
    pool_sites as pool_sites,
    site_arrays as site_arrays,
    to_client_data as to_client_data,
)
from .enrollment import (
    enroll as enroll,
)
from .errors import (
    AccessTokenError as AccessTokenError,
    AuthError as AuthError,
    ClientError as ClientError,
    ClientQuarantinedError as ClientQuarantinedError,
    ConfigError as ConfigError,
    ConflictError as ConflictError,
    CredentialsError as CredentialsError,
    DataError as DataError,
    EnrollmentTokenError as EnrollmentTokenError,
    InitialModelExistsError as InitialModelExistsError,
    InsecureTransportError as InsecureTransportError,
    IntegrityError as IntegrityError,
    InvalidRequestError as InvalidRequestError,
    JobExistsError as JobExistsError,
    JobNotFoundError as JobNotFoundError,
    JobNotPausedError as JobNotPausedError,
    JobNotStartedError as JobNotStartedError,
    JobNotTrainingError as JobNotTrainingError,
    JobPausedError as JobPausedError,
    JobRotatingError as JobRotatingError,
    KeyEpochMismatchError as KeyEpochMismatchError,
    KeyIdMismatchError as KeyIdMismatchError,
    LayoutConflictError as LayoutConflictError,
    LeaseRotatingError as LeaseRotatingError,
    LocalStateError as LocalStateError,
    NotEnrolledError as NotEnrolledError,
    NotFoundError as NotFoundError,
    PrivacyBudgetSpentError as PrivacyBudgetSpentError,
    ProbeNotOfferedError as ProbeNotOfferedError,
    ProtocolError as ProtocolError,
    RateLimitedError as RateLimitedError,
    RepairWindowExceededError as RepairWindowExceededError,
    RetrainError as RetrainError,
    RotationNotOfferedError as RotationNotOfferedError,
    ServerError as ServerError,
    ServiceError as ServiceError,
    SpecInvalidError as SpecInvalidError,
    SpecMismatchError as SpecMismatchError,
    TooStaleError as TooStaleError,
    TrainingError as TrainingError,
    TransportError as TransportError,
    UpdateNotFoundError as UpdateNotFoundError,
    VersionAheadError as VersionAheadError,
    error_from_problem as error_from_problem,
)
from .events import (
    RoundResult as RoundResult,
)
from .models import (
    MODELS as MODELS,
    build_model as build_model,
    resolve_model as resolve_model,
)
from .output import (
    Reporter as Reporter,
    render_status as render_status,
)
from .rounds.loop import (
    RunSummary as RunSummary,
)
from .runner import (
    Runner as Runner,
)
from .settings import (
    ClientSettings as ClientSettings,
)
from .state import (
    Credential as Credential,
    LocalState as LocalState,
)
from .training import (
    EvalResult as EvalResult,
    TrainConfig as TrainConfig,
    evaluate as evaluate,
    train_local as train_local,
)
from .transport import (
    ClientOptions as ClientOptions,
    KeyauthClient as KeyauthClient,
    RetryPolicy as RetryPolicy,
    ServerClient as ServerClient,
    TokenManager as TokenManager,
    require_secure_url as require_secure_url,
)
from .updates import (
    CompressionConfig as CompressionConfig,
    WireReport as WireReport,
    prepare_update as prepare_update,
)

# every name above, as ``lazy_loader.attach_stub`` computes it at run time
__all__: list[str]
