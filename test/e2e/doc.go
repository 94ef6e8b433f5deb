// Package e2e holds black-box tests: they run the real svcplane binary and drive it with kubectl
// and client-go as a user would. Tests that need network namespaces skip unless run as root.
package e2e
