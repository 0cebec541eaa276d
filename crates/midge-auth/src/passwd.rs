//! Password files in mosquitto's `password_file` syntax.
