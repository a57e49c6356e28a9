//! Load policy (see issue 3).
