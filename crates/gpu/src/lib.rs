//! placeholder (helper-3 writes this)
