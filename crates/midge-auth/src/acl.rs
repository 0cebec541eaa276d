//! Access control lists in mosquitto's `acl_file` syntax.
