module github.com/outboxtodo/outboxtodo/services/projector

go 1.26.8
