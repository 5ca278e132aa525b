//! Splitting superpackets into segments.
