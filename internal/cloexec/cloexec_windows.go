package cloexec

// Inherited does nothing: Windows handles are only inherited when made
// inheritable, and Go makes none so.
func Inherited() {}
