//! Data directory layout and node settings (in progress).
