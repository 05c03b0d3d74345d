# frozen_string_literal: true

module InParallel
  VERSION = "0.1.0"
end
