// Package cloexec keeps the descriptors a process inherited by accident
// (an open file or pipe its parent shell left without close-on-exec) from
// reaching the processes it starts. Go opens its own descriptors
// close-on-exec; inherited ones are the only leak.
package cloexec
