//! Property tests of the decoders of peer input (written next).
