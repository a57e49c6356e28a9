//! The in-kernel gate (issue 5).
