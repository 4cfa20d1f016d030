"""The HTTP edge keyauth and fl_server share: problem+json handlers, serving, request deadlines.

``hefl_http.problems`` answers each service's error tree (based on
``hefl_wire.ProblemError``, the wire contract) and the framework's own errors as
``application/problem+json``; ``hefl_http.serving`` holds what both do alike under
uvicorn (version, settings errors, logging, the lazily built ``app``);
``hefl_http.protocol`` is uvicorn's h11 protocol with deadlines for receiving a request
(``--http hefl_http.protocol:DeadlineH11Protocol``); ``hefl_http.conditional`` says whether
an ``If-None-Match`` names an ETag.
"""
