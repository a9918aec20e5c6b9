//! JSON configuration: sections, defaults, merging, validation.
