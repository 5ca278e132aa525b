//! Node-API bindings: argument conversion and threads <-> promises only; no packet logic.
