"""``hefl-admin``: the administrator's command line for keyauth and fl_server, over HTTP.

It belongs to neither service: it talks to keyauth (enrollment tokens, clients, key
epochs, administrator tokens) and to fl_server (jobs) through their REST surfaces only,
and imports nothing of theirs, only the wire contract (``hefl_wire``) and the study spec
(``hefl_study``).
"""

from hefl_admin.cli import main
from hefl_admin.errors import AdminError, InputError, UnreachableError
from hefl_admin.keyauth_client import KeyauthAdmin
from hefl_admin.server_client import JobCreated, ServerAdmin
from hefl_admin.transport import Answer, ServiceHttp

__all__ = [
    "AdminError",
    "Answer",
    "InputError",
    "JobCreated",
    "KeyauthAdmin",
    "ServerAdmin",
    "ServiceHttp",
    "UnreachableError",
    "main",
]
