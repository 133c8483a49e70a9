//! The configuration companion (in progress).
