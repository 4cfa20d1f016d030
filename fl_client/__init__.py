"""hefl hospital client: pull, decrypt, train, compress, encrypt, push."""

# The public names load on first use (PEP 562, ``lazy_loader``): ``import
# fl_client.training`` or ``hefl-client jobs`` should not pay for torch, scikit-learn,
# TenSEAL and pandas that only other parts of the client need. The names and the
# submodule of each are listed once, in ``__init__.pyi``, which type checkers read too.

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
