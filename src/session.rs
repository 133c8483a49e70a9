//! Sans-I/O CAPF session (in progress).
