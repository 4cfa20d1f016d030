"""The HTTP edge keyauth and fl_server share: problem-carrying errors and problem+json handlers.

``hefl_http.errors`` (the error base) imports no web framework, so the services'
transport-free modules and the command-line tools can import their error trees without
FastAPI; ``hefl_http.problems`` is the FastAPI side (responses and exception handlers);
``hefl_http.serving`` holds what both do alike under uvicorn (version, settings errors,
logging, the lazily built ``app``); ``hefl_http.protocol`` is uvicorn's h11 protocol with
deadlines for receiving a request (``--http hefl_http.protocol:DeadlineH11Protocol``).
"""
