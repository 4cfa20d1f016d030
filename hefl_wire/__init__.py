"""hefl's wire contract for keyauth, fl_server and fl_client: problem codes, tokens, loopback.

Pure: no web framework, no HTTP client, no I/O. It holds what the three roles must agree
on byte for byte (docs/protocol.md):

- the registry of every problem code a service answers, with its HTTP status
  (``PROBLEMS``), and ``ProblemError``, the base of both services' error trees, whose
  classes are checked against it when they are defined;
- access tokens: the roles that hold them (``CLIENT_ROLE``, ``ADMIN_ROLE``,
  ``VIEWER_ROLE``), their claims (``AccessClaims``, ``claims_to_payload`` /
  ``claims_from_payload``), their verification (``TokenVerifier``) and its errors;
  signing stays in keyauth;
- key ids: the id of a key epoch's keys (``key_id_of``, the SHA-256 of its secret
  context) and the verification of keyauth's signed statement of it (``KeyIdVerifier``);
- the loopback-host rule (``is_loopback_host``).
"""

from hefl_wire._errors import ProblemError, bearer_challenge
from hefl_wire._hosts import is_loopback_host
from hefl_wire._keyids import (
    KEY_ID_PURPOSE,
    KEY_ID_TYPE,
    KeyIdStatement,
    KeyIdVerifier,
    KeyStatementError,
    key_id_of,
    statement_from_payload,
    statement_to_payload,
)
from hefl_wire._problems import PROBLEMS, Problem, ProblemCodeError, check_problem
from hefl_wire._tokens import (
    ADMIN_ROLE,
    ADMIN_SUBJECT,
    ALGORITHM,
    AUDIENCE,
    CLAIMS,
    CLIENT_ROLE,
    ISSUER,
    MAX_TOKEN_CHARS,
    PURPOSE_CLAIM,
    ROLES,
    VIEWER_ROLE,
    VIEWER_SUBJECT,
    AccessClaims,
    TokenError,
    TokenExpiredError,
    TokenInvalidError,
    TokenMissingError,
    TokenVerifier,
    TokenWrongRoleError,
    claims_from_payload,
    claims_to_payload,
    load_verification_key,
)

__all__ = [
    "ADMIN_ROLE",
    "ADMIN_SUBJECT",
    "ALGORITHM",
    "AUDIENCE",
    "CLAIMS",
    "CLIENT_ROLE",
    "ISSUER",
    "KEY_ID_PURPOSE",
    "KEY_ID_TYPE",
    "MAX_TOKEN_CHARS",
    "PROBLEMS",
    "PURPOSE_CLAIM",
    "ROLES",
    "VIEWER_ROLE",
    "VIEWER_SUBJECT",
    "AccessClaims",
    "KeyIdStatement",
    "KeyIdVerifier",
    "KeyStatementError",
    "Problem",
    "ProblemCodeError",
    "ProblemError",
    "TokenError",
    "TokenExpiredError",
    "TokenInvalidError",
    "TokenMissingError",
    "TokenVerifier",
    "TokenWrongRoleError",
    "bearer_challenge",
    "check_problem",
    "claims_from_payload",
    "claims_to_payload",
    "is_loopback_host",
    "key_id_of",
    "load_verification_key",
    "statement_from_payload",
    "statement_to_payload",
]
