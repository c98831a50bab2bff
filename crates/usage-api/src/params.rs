//! Query parameters of the usage routes: defined in the core, where the Claude proxy's gateway-key route
//! (`GET /v1/gateway-key/usage/me`) parses them the same way.

pub use metering_core::usage_report::params::*;
