// Package controller holds what every built-in controller is given: a client of the API, the
// shared informers, and the REST config for dynamic and metadata clients. Controllers reach the
// API only through these, as any client would.
package controller

import (
	"context"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
)

// Context is what a controller is built from.
type Context struct {
	Config    *rest.Config
	Client    kubernetes.Interface
	Informers informers.SharedInformerFactory
	// MetadataInformers, when set, is the shared factory of metadata-only informers (the API
	// server's reads its storage in-process); when nil a controller builds one from Config.
	MetadataInformers metadatainformer.SharedInformerFactory
}

// Registration names a controller and builds it. New registers the informers the controller
// needs and returns its loop, which runs until ctx ends; informers start between the two.
type Registration struct {
	Name string
	New  func(c Context) (run func(ctx context.Context), err error)
}
