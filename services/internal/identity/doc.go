// Package identity is the device registry: who may connect to the MQTT
// broker as which device, and with what password.
//
// Each device authenticates with username = its device id and a password
// (DESIGN.md, "Trust boundary"). The registry is one JSON file (by default
// data_dir/devices.json), written atomically (temporary file, then rename)
// with mode 0600, holding per device its id, a bcrypt hash of the password
// (which the embedded NATS server checks) and a PBKDF2-SHA512 hash in
// Mosquitto's "$7$" format (Mosquitto 2.0 does not accept bcrypt; see
// MosquittoHash). Both are made from the password when the device is added
// or imported; the password itself is stored nowhere.
//
// Add, Replace, Remove, Import and List edit and read the file; each edit
// holds an exclusive lock on path+".lock" so two commands at once do not
// lose each other's change. WriteMosquittoPasswordFile turns the registry
// (and the services' own users) into Mosquitto's password_file.
//
// A running server reads the file through a Store: OpenStore loads it (a
// missing file is an empty registry) and a goroutine polls the file's
// identity, modification time and size once a second, reloading when they
// change, so "otawatch devices add" and "remove" take effect without a
// restart. Reload returns, and OnChange callbacks receive, the ids whose
// credentials no longer hold (removed, or given a new password), so the
// server can disconnect them.
//
// Check pays bcrypt once per device and password: a successful check is
// remembered in memory (a keyed SHA-256 of the password, never the
// password) against the hash it was verified with, so a reconnecting device
// is let in without bcrypt again, and the entry stops counting as soon as
// the device's hash changes or it is removed. Failed checks are not
// remembered.
//
// Devices whose passwords come from a secret (the simulator's demo fleets)
// use DerivePassword: hex HMAC-SHA256(secret, device id), so both sides need
// only the secret and the ids.
package identity
