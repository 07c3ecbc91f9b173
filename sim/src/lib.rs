//! flowlab-sim
