// Package config owns allexmasterconfig.json, the master's configuration
// file: its types, strict parsing with errors that point at the file, line
// and field, validation, defaults, writing the default file on first start,
// and conversion of module definitions to allex.v1 ModuleSpecs.
//
// It is also the one place that maps protocol names ("tcp", "http", "ws")
// to and from allexv1.Protocol (ProtocolFromString, ProtocolString), since
// the config file is where the names enter the master.
package config
