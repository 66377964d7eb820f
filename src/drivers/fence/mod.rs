//! Real fencing: any standard fence agent through its stdin protocol, and native Redfish.
