// Model adapters: the concept and its type erasure (docs/adapters.md).
#pragma once

#include "cospec/adapters/any_model.hpp"
#include "cospec/adapters/model_adapter.hpp"
