//! Timer wheel (placeholder, being written).
