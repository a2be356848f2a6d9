// Package config owns allexmasterconfig.json, the master's configuration
// file: its types, strict parsing with errors that point at the file, line
// and field, validation, defaults, writing the default file on first start,
// and conversion of module definitions to allex.v1 ModuleSpecs (with
// agent/modspec's tables and validator).
package config
