package app_test

import (
	"go/ast"
	"path/filepath"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
)

// mongoWrites are the methods that change a MongoDB database (of the driver's
// Collection, Database and Client, and package readmodel's EnsureIndexes).
var mongoWrites = map[string]bool{
	"InsertOne": true, "InsertMany": true, "UpdateOne": true, "UpdateMany": true, "UpdateByID": true,
	"ReplaceOne": true, "DeleteOne": true, "DeleteMany": true, "BulkWrite": true, "FindOneAndUpdate": true,
	"FindOneAndReplace": true, "FindOneAndDelete": true, "Drop": true, "CreateCollection": true,
	"CreateOne": true, "CreateMany": true, "DropOne": true, "DropAll": true, "RunCommand": true,
	"EnsureIndexes": true,
}

// mongoWriters are the module's packages that may write MongoDB, none of them part of
// the API service, by directory below the module root, with why.
var mongoWriters = map[string]string{
	filepath.Join("internal", "restore"): "todoctl restore-cutover replaces the read model, with every projector stopped",
}

// TestAPINeverWritesMongoDB enforces invariant 1 of the brief: the API writes only
// PostgreSQL (rows and outbox rows in one transaction); the read model is the
// projector's alone. It reads every non-test Go file of the module but mongoWriters'
// and fails on any call of a MongoDB write method.
func TestAPINeverWritesMongoDB(t *testing.T) {
	t.Parallel()
	fset, byDir := apitest.ModuleSource(t, filepath.Join("..", ".."))
	scanned := 0
	for dir, files := range byDir {
		if _, ok := mongoWriters[dir]; ok {
			continue
		}
		scanned += len(files)
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && mongoWrites[sel.Sel.Name] {
					t.Errorf("%s: calls %s, a MongoDB write: the API must only read the read model", fset.Position(call.Pos()), sel.Sel.Name)
				}
				return true
			})
		}
	}
	if scanned < 10 {
		t.Fatalf("scanned only %d files: is the module root right?", scanned)
	}
}
