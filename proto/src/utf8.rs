//! Incremental UTF-8 validation of text messages across fragments.
