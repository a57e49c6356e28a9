//! Helper and kfunc catalogue (generated from catalogue/).
