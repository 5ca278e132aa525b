//! Coalescing packets into superpackets.
