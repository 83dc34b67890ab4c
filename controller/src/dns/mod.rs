//! DNS records that follow the serving site: RFC 2136 dynamic updates signed with TSIG (confirmed by
//! asking the authoritative server), and ExternalDNS `DNSEndpoint` objects.

pub mod dns_endpoint;
pub mod rfc2136;
